import glob
import json
import sys

for stage in sys.argv[2:]:
    for f in glob.glob(f"{sys.argv[1]}/{stage}/**/results*.json", recursive=True):
        r=json.load(open(f))['results']
        def m(v):
            for k in ('acc_norm,none','acc,none','exact_match,flexible-extract','exact_match,strict-match'):
                if k in v:
                    return round(100*v[k],1)
        print(stage, {k.replace('toy_',''):m(v) for k,v in sorted(r.items())})
