"""deploy/sagemaker/launch.py without AWS: every request it would send is validated against
botocore's own SageMaker / Application Auto Scaling service models, and the launch path is
driven against a recording stand-in for boto3's clients."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import types

import pytest

from tests.servers import REPO

botocore = pytest.importorskip("botocore")
from botocore.session import get_session  # noqa: E402
from botocore.validate import ParamValidator  # noqa: E402

spec = importlib.util.spec_from_file_location("launch", REPO / "deploy/sagemaker/launch.py")
launch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(launch)

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/parlance-{}:cpu"
NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
OPERATIONS = {
    "create_training_job": ("sagemaker", "CreateTrainingJob"),
    "create_model": ("sagemaker", "CreateModel"),
    "create_endpoint_config": ("sagemaker", "CreateEndpointConfig"),
    "create_endpoint": ("sagemaker", "CreateEndpoint"),
    "register_scalable_target": ("application-autoscaling", "RegisterScalableTarget"),
    "put_scaling_policy": ("application-autoscaling", "PutScalingPolicy"),
}


def assert_valid(call: str, params: dict) -> None:
    service, operation = OPERATIONS[call]
    shape = get_session().get_service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()


def train_args(*extra):
    return [
        "train",
        "--model",
        "classifier",
        "--preset",
        "paper",
        "--image",
        IMAGE.format("trainer"),
        "--role",
        ROLE,
        "--output",
        "s3://bucket/parlance/",
        "--data",
        "s3://bucket/clinc150/",
        "--dry-run",
        *extra,
    ]


def deploy_args(*extra):
    return [
        "deploy",
        "--model",
        "generator",
        "--image",
        IMAGE.format("generator"),
        "--role",
        ROLE,
        "--model-data",
        "s3://bucket/job/output/model.tar.gz",
        "--endpoint-name",
        "parlance-generator",
        "--version",
        "v1",
        "--dry-run",
        *extra,
    ]


def test_training_job_request_is_a_valid_create_training_job(capsys):
    req = launch.main(train_args("--hyperparameter", "num_train_epochs=5"))
    assert_valid("create_training_job", req)
    assert NAME.match(req["TrainingJobName"])
    # what training/sagemaker.py reads: `model` picks the script, the rest become flags
    assert req["HyperParameters"] == {
        "model": "classifier",
        "preset": "paper",
        "num_train_epochs": "5",
    }
    assert req["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"
    assert req["InputDataConfig"][0]["ChannelName"] == "training"  # SM_CHANNEL_TRAINING
    assert json.loads(capsys.readouterr().out)["train"] == req


def test_hyperparameters_round_trip_through_the_train_entry_point():
    from training.sagemaker import train_argv

    req = launch.main(train_args("--hyperparameter", "learning_rate=3e-4"))
    kind, argv = train_argv(req["HyperParameters"], "/opt/ml/model", "/opt/ml/input/data/t")
    assert kind == "classifier"
    assert argv == [
        "--output_dir",
        "/opt/ml/model",
        "--data_dir",
        "/opt/ml/input/data/t",
        "--preset",
        "paper",
        "--learning_rate",
        "3e-4",
    ]


def test_endpoint_requests_are_valid_and_autoscale_when_asked():
    reqs = launch.main(
        deploy_args(
            "--min-instances", "1", "--max-instances", "4", "--env", "GENERATOR_NUM_BEAMS=1"
        )
    )
    assert set(reqs) == {
        "create_model",
        "create_endpoint_config",
        "create_endpoint",
        "register_scalable_target",
        "put_scaling_policy",
    }
    for call, params in reqs.items():
        assert_valid(call, params)
    env = reqs["create_model"]["PrimaryContainer"]["Environment"]
    assert env == {"SAGEMAKER_BIND_TO_PORT": "8080", "GENERATOR_NUM_BEAMS": "1"}
    assert reqs["register_scalable_target"]["MaxCapacity"] == 4
    assert (
        reqs["register_scalable_target"]["ResourceId"]
        == "endpoint/parlance-generator/variant/AllTraffic"
    )
    for name in (reqs["create_model"]["ModelName"], reqs["create_endpoint"]["EndpointName"]):
        assert NAME.match(name)
    fixed = launch.main(deploy_args())
    assert "register_scalable_target" not in fixed


@pytest.mark.parametrize(
    "argv,message",
    [
        (deploy_args("--min-instances", "3", "--max-instances", "2"), "min-instances"),
        (deploy_args("--env", "NOVALUE"), "KEY=VALUE"),
        (train_args("--hyperparameter", "=5"), "KEY=VALUE"),
    ],
)
def test_bad_arguments_are_refused_with_a_message(argv, message):
    with pytest.raises(SystemExit, match=message):
        launch.main(argv)


class Recorder:
    def __init__(self, service, calls):
        self.service, self.calls = service, calls

    def __getattr__(self, name):
        def call(**kwargs):
            self.calls.append((self.service, name, kwargs))
            if name == "describe_training_job":
                return {
                    "TrainingJobStatus": "Completed",
                    "ModelArtifacts": {"S3ModelArtifacts": "s3://b/model.tar.gz"},
                }
            return {}

        return call

    def get_waiter(self, name):
        calls = self.calls
        return types.SimpleNamespace(wait=lambda **kw: calls.append((self.service, name, kw)))


def test_launching_sends_the_requests_in_order(monkeypatch):
    calls = []
    fake = types.SimpleNamespace(client=lambda service: Recorder(service, calls))
    monkeypatch.setitem(sys.modules, "boto3", fake)
    argv = [a for a in deploy_args("--max-instances", "3") if a != "--dry-run"]
    reqs = launch.main(argv)
    assert [(s, n) for s, n, _ in calls] == [
        ("sagemaker", "create_model"),
        ("sagemaker", "create_endpoint_config"),
        ("sagemaker", "create_endpoint"),
        ("sagemaker", "endpoint_in_service"),
        ("application-autoscaling", "register_scalable_target"),
        ("application-autoscaling", "put_scaling_policy"),
    ]
    assert calls[0][2] == reqs["create_model"]
    calls.clear()
    launch.main([a for a in train_args() if a != "--dry-run"])
    assert [n for _, n, _ in calls] == [
        "create_training_job",
        "training_job_completed_or_stopped",
        "describe_training_job",
    ]


def test_a_missing_boto3_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # import fails
    with pytest.raises(SystemExit, match="parlance\\[sagemaker\\]"):
        launch.main([a for a in train_args() if a != "--dry-run"])
