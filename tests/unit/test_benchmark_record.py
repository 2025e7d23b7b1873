"""lab/benchmark.py's record when models fail: the others' figures kept, ratios only against a
measured fairseq lstm, each failure in one line."""
from lab.benchmark import REFERENCE, run_worker, summarize


def worker_result(tokens_per_s: float) -> dict:
    return {"train_tokens_per_s": tokens_per_s, "train_flops_per_token": 1e6, "beam5_sentences_per_s": 10.0,
            "criterion": "masked_ce", "device": "cpu (2 cores)"}


def test_the_failed_are_listed_and_the_measured_keep_their_medians_and_ratios():
    runs = {"rnn_seq2seq": [worker_result(300), worker_result(100), worker_result(200)],
            REFERENCE: [worker_result(100)] * 3}
    failed = {"rnn_seq2seq attention graphs": "exit 1: RuntimeError: CUDA error"}
    record = summarize(runs, failed, peak=1000.0, precision="float32")
    assert record["failed"] == failed and list(record["models"]) == ["rnn_seq2seq", REFERENCE]
    assert record["models"]["rnn_seq2seq"]["train_tokens_per_s"] == 200  # the median
    assert record["models"]["rnn_seq2seq"]["share_of_matmul_peak"] == 200 * 1e6 / 1e9 / 1000
    assert record["ratios"] == {"rnn_seq2seq": {"train_tokens_per_s": 2.0, "train_flops_per_token": 1.0,
                                                "beam5_sentences_per_s": 1.0, "train_gflops_per_s": 2.0,
                                                "share_of_matmul_peak": 2.0}}
    assert record["repeats"] == 3 and record["device"] == "cpu (2 cores)"


def test_without_fairseq_lstm_there_are_no_ratios_but_the_figures_stay():
    record = summarize({"rnn_seq2seq": [worker_result(150)]}, {REFERENCE: "timed out after 60 s (--worker-timeout)"},
                       peak=1000.0, precision="float32")
    assert record["ratios"] == {} and record["models"]["rnn_seq2seq"]["train_tokens_per_s"] == 150


def test_a_worker_that_exits_with_an_error_gives_its_last_line():
    result, error = run_worker(["--data", "unused"], "no such model", timeout=60)
    assert result is None
    assert error.startswith("exit 2: ") and "argument --worker: invalid choice: 'no such model'" in error


def test_a_worker_that_prints_no_result_is_a_failure_not_a_crash():
    result, error = run_worker(["--help"], "rnn_seq2seq", timeout=60)  # argparse's help, exit 0
    assert result is None and error.startswith("no JSON result; its last line: ")
