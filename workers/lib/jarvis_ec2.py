"""EC2 through its Query API for the ec2:* workers (see docs/workers.md, "EC2").

Debian's python3-boto3 (botocore) signs every request with Signature V4 and parses the XML
answers: AWS's own SDK rather than a signer of ours, so what is tested against the emulator's
independent SigV4 check is what production runs. Settings from the worker environment only:

    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN   (workers.env_allow), or
    JARVIS_EC2_CREDENTIALS_FILE   a file "ACCESS_KEY_ID SECRET" (one line, not world-readable)
    JARVIS_EC2_REGION             else AWS_REGION / AWS_DEFAULT_REGION; required
    JARVIS_EC2_ENDPOINT_URL       default https://ec2.<region>.amazonaws.com
    JARVIS_EC2_CA_FILE            CA bundle for the endpoint (default: the system's)
    JARVIS_EC2_WAIT               how long a stage waits for a state (default 4m)
    JARVIS_EC2_KEY_NAME, JARVIS_EC2_SUBNET_ID, JARVIS_EC2_SECURITY_GROUP_IDS (comma-separated)

No ~/.aws file is read: the session gets its credentials and region explicitly.
"""
import os
import re
import time

import jarvis_worker as jw

Failure, Skip = jw.Failure, jw.Skip
LIVE = ["pending", "running", "stopping", "stopped", "shutting-down"]
# instance.size in MB -> the smallest general-purpose type with that much memory
TYPES = [(512, "t3.nano"), (1024, "t3.micro"), (2048, "t3.small"), (4096, "t3.medium"),
         (8192, "t3.large"), (16384, "t3.xlarge"), (32768, "t3.2xlarge")]
# guestid -> (owner account, AMI name pattern): the distributions' own published images
IMAGES = {"debian12": ("136693071363", "debian-12-amd64-*"),
          "debian11": ("136693071363", "debian-11-amd64-*"),
          "ubuntu22.04": ("099720109477", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*"),
          "ubuntu24.04": ("099720109477", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*")}


def clean(text, limit=200):
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", str(text)).strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


class Api:
    def __init__(self, w):
        import boto3
        import botocore.config
        import botocore.exceptions
        self.w = w
        self.errors = botocore.exceptions
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not (key and secret) and os.environ.get("JARVIS_EC2_CREDENTIALS_FILE"):
            words = jw.read_secret_file(os.environ["JARVIS_EC2_CREDENTIALS_FILE"],
                                        "JARVIS_EC2_CREDENTIALS_FILE").split()
            if len(words) < 2:
                raise Failure("JARVIS_EC2_CREDENTIALS_FILE must hold 'ACCESS_KEY_ID SECRET_KEY'", 2)
            key, secret = words[0], words[1]
        if not (key and secret):
            raise Failure("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                          "(workers.env_allow) or JARVIS_EC2_CREDENTIALS_FILE (workers.env)", 2)
        region = (os.environ.get("JARVIS_EC2_REGION") or os.environ.get("AWS_REGION")
                  or os.environ.get("AWS_DEFAULT_REGION"))
        if not region:
            raise Failure("no EC2 region: set JARVIS_EC2_REGION in workers.env (us-east-1, ...)", 2)
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
            raise Failure(f"JARVIS_EC2_REGION {jw._shown(region)} is not an AWS region name "
                          "(us-east-1, eu-west-3)", 2)
        self.region = region
        self.wait = jw.duration_seconds(os.environ.get("JARVIS_EC2_WAIT") or "4m", "JARVIS_EC2_WAIT")
        self.deadline = time.monotonic() + self.wait
        session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                                        aws_session_token=os.environ.get("AWS_SESSION_TOKEN"),
                                        region_name=region)
        config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 6},
                                        connect_timeout=10, read_timeout=30,
                                        user_agent_extra="jarvis-ec2-worker")
        self.ec2 = session.client("ec2", endpoint_url=os.environ.get("JARVIS_EC2_ENDPOINT_URL") or None,
                                  verify=os.environ.get("JARVIS_EC2_CA_FILE") or None, config=config)

    def call(self, action, **params):
        """One EC2 action (botocore retries throttling and 5xx with backoff); errors as one
        clear line."""
        try:
            return getattr(self.ec2, action)(**params)
        except self.errors.ClientError as e:
            err = e.response.get("Error", {})
            code, message = clean(err.get("Code", "?"), 60), clean(err.get("Message", ""), 200)
            if code in ("AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId",
                        "SignatureDoesNotMatch"):
                if "region" in message.lower():
                    raise Failure(f"EC2 does not know region {self.region} ({code}: {message}): "
                                  "check JARVIS_EC2_REGION", 2)
                raise Failure(f"EC2 refused the credentials ({code}: {message}): check "
                              "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; the key needs "
                              "ec2:Describe*, RunInstances, CreateTags, StopInstances and "
                              "TerminateInstances", 1)
            if code in ("InstanceLimitExceeded", "VcpuLimitExceeded"):
                raise Failure(f"EC2 refused a new instance: the account's limit is reached "
                              f"({code}: {message}); terminate unused instances or ask AWS "
                              "for a higher quota", 1)
            raise Failure(f"EC2 {action} failed: {code}: {message}", 1)
        except self.errors.EndpointConnectionError as e:
            raise Failure(f"cannot reach EC2 in {self.region}: {clean(e, 160)}", 1)
        except (self.errors.BotoCoreError, OSError) as e:
            raise Failure(f"EC2 {action} failed: {type(e).__name__}: {clean(e, 160)}", 1)

    def by_name(self, name):
        """The live instances tagged Name=<name> (not terminated), oldest first."""
        found, token = [], None
        while True:
            params = {"Filters": [{"Name": "tag:Name", "Values": [name]},
                                  {"Name": "instance-state-name", "Values": LIVE}]}
            if token:
                params["NextToken"] = token
            r = self.call("describe_instances", **params)
            for res in r.get("Reservations", []):
                found.extend(res.get("Instances", []))
            token = r.get("NextToken")
            if not token:
                return sorted(found, key=lambda i: str(i.get("LaunchTime", "")))

    def instance(self, iid):
        r = self.call("describe_instances", InstanceIds=[iid])
        for res in r.get("Reservations", []):
            for i in res.get("Instances", []):
                return i
        return None

    def wait_state(self, iid, wanted, what):
        delay, last = 1.0, None
        while True:
            i = self.instance(iid)
            state = ((i or {}).get("State") or {}).get("Name", "gone")
            if state == wanted:
                return i
            if state != last:
                self.w.log(f"EC2 instance {iid} is {clean(state, 20)}; waiting for {wanted}")
                last = state
            if time.monotonic() + delay > self.deadline:
                raise Failure(f"EC2 instance {iid} ({self.w.host}) still {clean(state, 20)}, not "
                              f"{wanted}, after {int(self.wait)}s ({what}); look in the EC2 "
                              "console, then retry", 1)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def tags(instance):
    return {t.get("Key"): t.get("Value") for t in instance.get("Tags") or []}


def ec2_worker(body):
    def task(w):
        provider = str(w.get("instance.provider") or "")
        if provider.lower() != "ec2":
            raise Failure(f"instance.provider is {provider!r}, not 'ec2': {w.task} only drives EC2", 2)
        body(w, Api(w))
    jw.run(task)
