"""The plugin's refusals of bad input, one base class for all of them."""


class Refusal(Exception):
    """Bad input or a state the plugin will not go on with; its message names the problem and what to do,
    in one line, and fairseq's commands end with that line instead of a traceback (patches/refusals.py)."""


class OptionError(Refusal, ValueError):
    """An option, or a combination of options, that cannot work; the message names them."""
