"""`roma-eval prompt-tuning --pretrained M --tasks T --output_path DIR`: Prompt Tuning (peft) on the training mixture
with RoMA's task loss and budget; evaluate with `lm_eval --model hf-peft --model_args pretrained=M,peft=DIR`."""

from roma_eval.commands.peft_tuning import parents  # noqa: F401  (the verb's flags)


def add_arguments(parser) -> None:
    from roma_eval.commands import peft_tuning

    peft_tuning.add_arguments(parser, "prompt_tuning")


def run(args) -> int:
    from roma_eval.commands import peft_tuning

    return peft_tuning.run(args, "prompt_tuning")
