# SDK container for Dataflow GPU workers: the Beam Python SDK, TensorFlow with CUDA,
# and this project. Build from the repository root:
#   docker build -f deploy/worker-gpu.Dockerfile -t REGION-docker.pkg.dev/P/R/captioning-worker .
# Run the caption job with:
#   captioning caption ... --gpu --runner DataflowRunner --sdk_container_image IMAGE \
#     --dataflow_service_options "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver" \
#     --machine_type g2-standard-8 --experiments use_runner_v2
FROM apache/beam_python3.11_sdk:2.77.0
WORKDIR /opt/captioning
COPY pyproject.toml README.md ./
COPY captioning ./captioning
COPY pipelines ./pipelines
# tensorflow[and-cuda] instead of tensorflow-cpu: the same code, with GPU kernels.
RUN pip install --no-cache-dir "tensorflow[and-cuda]==2.21.0" \
 && pip install --no-cache-dir --no-deps . \
 && pip install --no-cache-dir "keras>=3.10,<4" pyarrow pillow pycocoevalcap
ENV TF_CPP_MIN_LOG_LEVEL=2
