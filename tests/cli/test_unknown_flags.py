"""A flag neither the command nor Beam knows is an error (exit 2, "did you mean"), while
every Beam and Dataflow option still passes through under its own name."""

import pytest

from captioning.cli.main import main
from captioning.errors import UserError
from pipelines.options import CaptionOptions, normalize_dry_run
from pipelines.unknown_flags import check_beam_flags

# Beam and Dataflow options a local or Dataflow launch of either job may give.
BEAM_OPTIONS = [
    *("--runner", "DataflowRunner"),
    *("--project", "P"),
    *("--region", "R"),
    *("--temp_location", "gs://x/tmp"),
    *("--sdk_container_image", "I"),
    *("--direct_num_workers", "2"),
    *("--direct_running_mode", "multi_processing"),
    *("--experiments", "use_runner_v2"),
    # (no_use_multiple_sdk_containers is an experiment, not a flag of its own.)
    *("--experiments", "no_use_multiple_sdk_containers"),
    *(
        "--dataflow_service_options",
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
    ),
    *("--machine_type", "g2-standard-8"),
    *("--disk_size_gb", "50"),
    *("--max_num_workers", "4"),
    "--no_use_public_ips",
    "--dry_run=True",
    *("--job_name", "nightly"),
    *("--worker_harness_container_image", "I"),
    *("--number_of_worker_harness_threads", "4"),
    "--save_main_session",
    *("--setup_file", "./setup.py"),
    *("--requirements_file", "requirements.txt"),
    *("--template_location", "gs://x/template"),
    *("--labels", "k=v"),
    *("--resource_hints", "accelerator=type:nvidia-l4;count:1"),
    "--experiments=shuffle_mode=service",
]

CAPTION_OPTIONS = [
    *("--input", "/a/*.jpg", "--input", "gs://b/**"),
    *("--input-manifest", "m.txt", "--output", "/o/p", "--model", "/m"),
    "--skip-existing",
    "--gpu=true",
    "--skip_existing=false",
    *("--beam-width", "3", "--min-batch-size", "4", "--max_batch_size", "8"),
    *("--precision", "auto", "--decode-timeout", "5", "--no-decode-isolation"),
    *("--job-spec-out", "spec.json", "--dry_run"),
]


def _error_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_caption_misspelt_flag_is_an_error_with_a_suggestion(capsys):
    # /no/bundle does not exist: the flags are checked before the model is looked at.
    code = main(
        ["caption", "--input", "x", "--output", "y", "--model", "/no/bundle", "--skip-existng"]
    )
    assert code == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("captioning caption: error: unknown option --skip-existng")
    assert "did you mean --skip-existing?" in lines[0]


def test_features_misspelt_flag_is_an_error_with_a_suggestion(capsys):
    code = main(
        [
            *("features", "--captions", "/no/c.csv", "--images", "/no", "--output", "/no/o"),
            *("--decode-timout", "3"),
        ]
    )
    assert code == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("captioning features: error: unknown option --decode-timout")
    assert "did you mean --decode-timeout?" in lines[0]


def test_beam_and_dataflow_options_pass_through():
    check_beam_flags(BEAM_OPTIONS)
    # features: Beam's options are fine, the caption job's are not its own.
    check_beam_flags(BEAM_OPTIONS, exclude=[CaptionOptions])


def test_caption_options_pass_through():
    check_beam_flags(normalize_dry_run([*CAPTION_OPTIONS, *BEAM_OPTIONS]))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--skip-existng=true"], "unknown option --skip-existng (did you mean --skip-existing?)"),
        (
            ["--skip_existng", "true"],
            "unknown option --skip_existng (did you mean --skip_existing?)",
        ),
        (["--gpuu", "--runer", "X"], "unknown options --gpuu (did you mean --gpu?), --runer"),
        # Beam itself would not take these for --runner either.
        (["--run", "DirectRunner"], "unknown option --run (did you mean --runner?)"),
        (["-runner", "DirectRunner"], "unknown option -runner (did you mean --runner?)"),
        # A yes/no flag of Beam's takes no value.
        (["--save_main_session", "yes"], "unexpected argument 'yes'"),
        (["--runner", "X", "--", "--project", "P"], "Beam ignores '--'"),
        (["--direct_num_workers", "two"], "invalid int value: 'two'"),
        (["--skip-existing", "maybe"], "expected true or false"),
    ],
)
def test_what_beam_would_not_parse_is_an_error(argv, message):
    with pytest.raises(UserError) as raised:
        check_beam_flags(argv)
    assert message in str(raised.value)


def test_features_does_not_take_the_caption_jobs_options():
    with pytest.raises(UserError, match="unknown option --skip-existing"):
        check_beam_flags(["--skip-existing"], exclude=[CaptionOptions])
    with pytest.raises(UserError, match=r"did you mean --decode_timeout\?"):
        check_beam_flags(
            ["--decode_timout", "3"], own_flags=["--decode-timeout"], exclude=[CaptionOptions]
        )


def test_options_are_read_from_the_classes_not_a_list():
    # Defined after the check was imported, and a subclass of a subclass, which Beam reads
    # through view_as. (It stays defined; Beam's own get_all_options only walks direct
    # subclasses of PipelineOptions, so no other test's Beam parser sees its flag.)
    class LaterOptions(CaptionOptions):
        @classmethod
        def _add_argparse_args(cls, parser):
            parser.add_argument("--unknown-flags-test-hours", type=int)

    check_beam_flags(["--unknown-flags-test-hours", "3", "--skip-existing"])
    with pytest.raises(UserError, match=r"did you mean --unknown-flags-test-hours\?"):
        check_beam_flags(["--unknown-flags-test-hour", "3"])
