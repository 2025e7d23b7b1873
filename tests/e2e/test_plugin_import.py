"""When the plugin registers (user_dir/__init__.py): at once where fairseq is loaded, otherwise
once fairseq has been imported and no module of the package is half-loaded; the scripts' helper
modules load without fairseq, so prepare.py and evaluate.py refuse bad input before its import."""
import pytest

from helpers import ROOT, run
from helpers import python_with_plugin as python


def test_the_scripts_helpers_load_without_fairseq_or_torch():
    loaded = python("import user_dir.files, user_dir.text, user_dir.workflow, user_dir.checkpoint_files, "
                    "user_dir.data_folder; "
                    "print(sorted(m for m in ('fairseq', 'torch') if m in sys.modules)); "
                    "import user_dir.dictionaries; print('fairseq' in sys.modules)").stdout
    assert loaded == "[]\nFalse\n"


REGISTERED = ("from fairseq.models import ARCH_MODEL_REGISTRY; from fairseq.criterions import CRITERION_REGISTRY; "
              "from user_dir import patches; "
              "print('rnn_seq2seq' in ARCH_MODEL_REGISTRY, 'masked_ce' in CRITERION_REGISTRY, len(patches.APPLIED))")


@pytest.mark.parametrize("first", [
    "import fairseq; import user_dir", "import user_dir; import fairseq",
    "import user_dir.workflow; from fairseq.data import Dictionary",  # fairseq's package first, then its module
    "from user_dir.models.rnn_seq2seq import RNNSeq2SeqModel",  # the README's Python API
    "import user_dir.hub", "import user_dir.modules.decoder",  # import fairseq, and models imports their names
    "import importlib.util, user_dir; importlib.util.find_spec('fairseq'); import fairseq",  # a look-up first
])
def test_the_plugin_registers_and_patches_once_fairseq_is_imported_in_any_order(first):
    assert python(f"{first}; {REGISTERED}").stdout == "True True 31\n"  # 31: len(test_patches.ALL)


def test_fairseqs_user_dir_finds_the_plugin_after_a_script_loaded_its_helpers():
    """fairseq skips a --user-dir already in sys.modules: the plugin registered when fairseq came."""
    parsed = python("import user_dir.workflow; from fairseq import options; "
                    "args = options.parse_args_and_arch(options.get_training_parser(), ['bin', '--user-dir', "
                    "sys.argv[1] + '/user_dir', '--arch', 'rnn_seq2seq', '--criterion', 'masked_ce']); "
                    "print(args.arch, args.criterion)").stdout
    assert parsed == "rnn_seq2seq masked_ce\n"


def test_a_failed_registration_fails_every_import_of_fairseq_not_only_the_first():
    out = python("import user_dir\nfor _ in range(2):\n    try:\n        import fairseq\n        print('imported')\n"
                 "    except ValueError as e:\n        print(type(e).__name__)",
                 env={"RNN_SEQ2SEQ_PATCHES": "some"}).stdout
    assert out == "PatchLevelError\nPatchLevelError\n"


@pytest.mark.parametrize("script, args, refusal", [
    ("prepare.py", ["--raw-dir", "/nonexistent"], "error: raw data folder /nonexistent does not exist"),
    ("evaluate.py", ["/nonexistent", "x.pt"], "error: DATA_BIN /nonexistent does not exist"),
])
def test_scripts_refuse_bad_input_before_importing_fairseq(script, args, refusal):
    proc = run("python", "-X", "importtime", ROOT / "scripts" / script, *args, check=False)
    assert proc.returncode != 0 and refusal in proc.stderr, proc.stderr[-1000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "sentencepiece" in imported and "fairseq" not in imported
