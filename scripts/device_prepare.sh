#!/usr/bin/env bash
# Prepare what bench/device_check.sh needs on a GPU machine that cannot reach the network (issue 16):
# the wheels of the few pure-Python/binary packages the learners import that its image lacks (for its
# Python 3.12), and a copy of the two public data folders the benches read (LETOR and KuaiRand, from
# ../shared/data; 6.4 MB). Both land in .device/, which git ignores (never committed): the device
# tool's `run` carries it with `carry: [".device"]`. Run here, once, before that call (DEVICE_WHEELS=0: data only).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${STREAMRANK_DATA:-../shared/data}"
python="${PYTHON:-python3}"
rm -rf .device
mkdir -p .device/whl .device/data
cp -r "$data/letor" "$data/kuairand" .device/data/
[ "${DEVICE_WHEELS:-1}" = 0 ] || "$python" -m pip download -q --no-deps --only-binary=:all: --python-version "${DEVICE_PYTHON:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .device/whl \
    pydantic==2.14.3 pydantic_core==2.50.4 msgspec==0.23.0 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing_extensions==4.16.0
du -sh .device
