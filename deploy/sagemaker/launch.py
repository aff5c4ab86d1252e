"""Train and deploy Parlance on Amazon SageMaker with the same images `docker compose` runs.

    # 1. a training job: the trainer image's `train` entry point (training/sagemaker.py)
    python deploy/sagemaker/launch.py train --model classifier --preset paper \\
        --image 123456789012.dkr.ecr.eu-west-1.amazonaws.com/parlance-trainer:cu124 \\
        --role arn:aws:iam::123456789012:role/SageMakerRole \\
        --data s3://my-bucket/clinc150/ --output s3://my-bucket/parlance/

    # 2. a real-time endpoint from the job's model.tar.gz: the classifier or generator
    #    image's `serve` entry point, with target-tracking autoscaling
    python deploy/sagemaker/launch.py deploy --model classifier \\
        --image 123456789012.dkr.ecr.eu-west-1.amazonaws.com/parlance-classifier:cpu \\
        --role arn:aws:iam::123456789012:role/SageMakerRole \\
        --model-data s3://my-bucket/parlance/<job>/output/model.tar.gz \\
        --endpoint-name parlance-classifier --min-instances 1 --max-instances 4

`--dry-run` prints the API requests as JSON and calls nothing (no credentials needed).

Why boto3 and not the `sagemaker` SDK: SDK v3 removed the Estimator/Model classes that v2
scripts use, and both versions only wrap these same four API calls for a custom image. Plain
SageMaker API requests are stable, print exactly in --dry-run, and are validated in the tests
against botocore's own SageMaker service model without AWS. boto3 is an optional extra
(`pip install "parlance[sagemaker]"`), imported only when something is really launched.

The gateway is not a SageMaker model (it holds no weights): run it where the frontends are
(ECS, Kubernetes: deploy/k8s, Lambda: docs/deploy.md) and point it at the endpoints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

# Instance types per (model, preset), for the model's size; override with --instance-type.
TRAIN_INSTANCES = {
    ("classifier", "cpu"): "ml.c6i.2xlarge",  # MiniLM full fine-tuning, 8 vCPU
    ("classifier", "demo"): "ml.c6i.2xlarge",
    ("classifier", "paper"): "ml.g5.2xlarge",  # RoBERTa-large + LoRA, bf16, A10G 24 GB
    ("generator", "cpu"): "ml.c6i.2xlarge",  # BERT2BERT from MiniLM
    ("generator", "demo"): "ml.c6i.2xlarge",
    ("generator", "paper"): "ml.g5.xlarge",  # FLAN-T5-base + LoRA, bf16
}
SERVE_INSTANCES = {
    ("classifier", "cpu"): "ml.c6i.large",  # ONNX Runtime, 2 vCPU
    ("classifier", "paper"): "ml.g5.xlarge",
    ("generator", "cpu"): "ml.c6i.xlarge",
    ("generator", "paper"): "ml.g5.xlarge",
}
# Autoscaling target for SageMakerVariantInvocationsPerInstance (per minute): about half of
# one 2-core replica's measured capacity (docs/benchmarks.md: ~400 classify requests/s,
# ~30 replies/s), so a replica is added well before requests queue.
INVOCATIONS_PER_INSTANCE = {"classifier": 12000, "generator": 900}
NAME_MAX = 63  # SageMaker resource names: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} wants KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def job_name(model: str, preset: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"parlance-{model}-{preset}-{stamp}"[:NAME_MAX]


def training_request(args: argparse.Namespace) -> dict:
    """CreateTrainingJob. Hyper-parameters are strings by SageMaker's contract; `model` picks
    the training script inside the `train` entry point, every other key becomes a flag."""
    hp = {
        "model": args.model,
        "preset": args.preset,
        **_pairs(args.hyperparameter, "--hyperparameter"),
    }
    req = {
        "TrainingJobName": args.job_name or job_name(args.model, args.preset),
        "AlgorithmSpecification": {"TrainingImage": args.image, "TrainingInputMode": "File"},
        "RoleArn": args.role,
        "HyperParameters": {k: str(v) for k, v in hp.items()},
        "OutputDataConfig": {"S3OutputPath": args.output},
        "ResourceConfig": {
            "InstanceType": args.instance_type or TRAIN_INSTANCES[(args.model, args.preset)],
            "InstanceCount": 1,
            "VolumeSizeInGB": 50,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": args.max_run_s},
        "Tags": [{"Key": "project", "Value": "parlance"}],
    }
    if args.data:  # without a channel the job loads the hub dataset clinc_oos
        req["InputDataConfig"] = [
            {
                "ChannelName": "training",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": args.data,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        ]
    return req


def endpoint_requests(args: argparse.Namespace) -> dict:
    """CreateModel, CreateEndpointConfig, CreateEndpoint and, when --max-instances is above
    --min-instances, the Application Auto Scaling target and target-tracking policy."""
    if not 1 <= args.min_instances <= args.max_instances:
        raise SystemExit("need 1 <= --min-instances <= --max-instances")
    name = args.endpoint_name
    env = {"SAGEMAKER_BIND_TO_PORT": "8080", **_pairs(args.env, "--env")}
    resource = f"endpoint/{name}/variant/AllTraffic"
    versioned = f"{name}-{args.version}"[:NAME_MAX]  # the model and its endpoint config
    reqs = {
        "create_model": {
            "ModelName": versioned,
            "PrimaryContainer": {
                "Image": args.image,
                "ModelDataUrl": args.model_data,
                "Environment": env,
            },
            "ExecutionRoleArn": args.role,
        },
        "create_endpoint_config": {
            "EndpointConfigName": versioned,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": versioned,
                    "InitialInstanceCount": args.min_instances,
                    "InstanceType": args.instance_type
                    or SERVE_INSTANCES[(args.model, args.preset)],
                    # /ping must answer while the model loads; a generator needs longer to load
                    "ContainerStartupHealthCheckTimeoutInSeconds": 600,
                }
            ],
        },
        "create_endpoint": {"EndpointName": name, "EndpointConfigName": versioned},
    }
    if args.max_instances > args.min_instances:
        dim = "sagemaker:variant:DesiredInstanceCount"
        reqs["register_scalable_target"] = {
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource,
            "ScalableDimension": dim,
            "MinCapacity": args.min_instances,
            "MaxCapacity": args.max_instances,
        }
        reqs["put_scaling_policy"] = {
            "PolicyName": f"{name}-invocations",
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource,
            "ScalableDimension": dim,
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": float(
                    args.target_invocations or INVOCATIONS_PER_INSTANCE[args.model]
                ),
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
                # add capacity quickly, remove it slowly (models take minutes to load)
                "ScaleOutCooldown": 60,
                "ScaleInCooldown": 300,
            },
        }
    return reqs


def _boto3():
    try:
        import boto3
    except ImportError as e:
        raise SystemExit(
            "boto3 is not installed: pip install 'parlance[sagemaker]' (or use --dry-run)"
        ) from e
    return boto3


def launch_training(req: dict, wait: bool) -> str:
    sm = _boto3().client("sagemaker")
    sm.create_training_job(**req)
    name = req["TrainingJobName"]
    print(f"training job {name} started", flush=True)
    if wait:
        sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=name)
        job = sm.describe_training_job(TrainingJobName=name)
        print(
            f"{name}: {job['TrainingJobStatus']}; model: "
            f"{job.get('ModelArtifacts', {}).get('S3ModelArtifacts')}",
            flush=True,
        )
    return name


def launch_endpoint(reqs: dict, wait: bool) -> None:
    boto3 = _boto3()
    sm = boto3.client("sagemaker")
    sm.create_model(**reqs["create_model"])
    sm.create_endpoint_config(**reqs["create_endpoint_config"])
    sm.create_endpoint(**reqs["create_endpoint"])
    name = reqs["create_endpoint"]["EndpointName"]
    print(f"endpoint {name} creating", flush=True)
    if wait or "register_scalable_target" in reqs:  # scaling needs the endpoint in service
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name)
        print(f"endpoint {name} in service", flush=True)
    if "register_scalable_target" in reqs:
        aas = boto3.client("application-autoscaling")
        aas.register_scalable_target(**reqs["register_scalable_target"])
        aas.put_scaling_policy(**reqs["put_scaling_policy"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", choices=["classifier", "generator"], required=True)
    common.add_argument("--image", required=True, help="ECR URI of the image's right target")
    common.add_argument("--role", required=True, help="SageMaker execution role ARN")
    common.add_argument("--instance-type", default=None, help="default: per model and preset")
    common.add_argument("--dry-run", action="store_true", help="print the requests only")
    common.add_argument("--no-wait", action="store_true")

    t = sub.add_parser("train", parents=[common], help="launch a training job")
    t.add_argument("--preset", choices=["cpu", "demo", "paper"], default="cpu")
    t.add_argument("--output", required=True, help="S3 prefix for model.tar.gz")
    t.add_argument(
        "--data",
        default=None,
        help="S3 URI of CLINC150 (oos-eval JSON); default: the hub dataset clinc_oos",
    )
    t.add_argument("--job-name", default=None)
    t.add_argument(
        "--hyperparameter",
        action="append",
        metavar="KEY=VALUE",
        help="any training flag, e.g. num_train_epochs=5 (repeatable)",
    )
    t.add_argument("--max-run-s", type=int, default=4 * 3600)

    d = sub.add_parser("deploy", parents=[common], help="deploy a real-time endpoint")
    d.add_argument(
        "--preset",
        choices=["cpu", "paper"],
        default="cpu",
        help="the artifact's preset (picks the default instance type)",
    )
    d.add_argument("--model-data", required=True, help="S3 URI of model.tar.gz")
    d.add_argument("--endpoint-name", required=True)
    d.add_argument(
        "--version",
        default=time.strftime("%Y%m%d%H%M%S", time.gmtime()),
        help="suffix of the model and endpoint-config names",
    )
    d.add_argument("--min-instances", type=int, default=1)
    d.add_argument("--max-instances", type=int, default=1)
    d.add_argument(
        "--target-invocations",
        type=int,
        default=None,
        help="autoscaling target: invocations per instance per minute",
    )
    d.add_argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="service setting, e.g. CLASSIFIER_BACKEND=onnx-int8 (repeatable)",
    )
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    reqs = training_request(args) if args.command == "train" else endpoint_requests(args)
    if args.dry_run:
        print(json.dumps({args.command: reqs}, indent=2))
        return reqs
    if args.command == "train":
        launch_training(reqs, wait=not args.no_wait)
    else:
        launch_endpoint(reqs, wait=not args.no_wait)
    return reqs


if __name__ == "__main__":
    main(sys.argv[1:])
