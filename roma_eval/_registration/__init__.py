"""Registration of roma-eval's lm-eval models on lm-eval versions without plugin discovery."""
