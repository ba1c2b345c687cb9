"""Cloud Composer (Airflow 2.4+) DAG: the caption flex template every night, new images only.

The same launch as ``flex_launch_body.json`` (the Cloud Scheduler job), with the
deployment's names read from Airflow Variables when the task runs: captioning_project,
captioning_region, captioning_bucket, captioning_template (gs:// path of the template
spec), captioning_image (the worker image) and captioning_model_id (the model id the
night trusts: the bundle's manifest.json model_id). Install it with:

    gcloud composer environments storage dags import --environment ENV \
        --location REGION --source deploy/schedule/caption_nightly_dag.py

``skip_existing`` makes each night caption only the URIs that are not yet in the
captions table under the (unchanging) output folder, so the job's cost follows what the
bucket gained, not its size. ``expect_model_id`` refuses a bundle whose content is not
the pinned model (a replaced or edited models/current). The task fails, and so alerts,
when the job fails: a refused bundle, a conflicting concurrent run, or a commit above the
error rate (max_error_rate, default 0.05).
"""

import pendulum
from airflow import DAG
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

with DAG(
    dag_id="captioning_nightly",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    # Two runs at once would caption the same new images twice.
    max_active_runs=1,
    tags=["captioning"],
) as dag:
    DataflowStartFlexTemplateOperator(
        task_id="caption_new_images",
        project_id="{{ var.value.captioning_project }}",
        location="{{ var.value.captioning_region }}",
        body={
            "launchParameter": {
                "jobName": "captioning-nightly-{{ ds_nodash }}",
                "containerSpecGcsPath": "{{ var.value.captioning_template }}",
                "parameters": {
                    "input": "gs://{{ var.value.captioning_bucket }}/photos/**",
                    "output": "gs://{{ var.value.captioning_bucket }}/captions/archive",
                    "model": "gs://{{ var.value.captioning_bucket }}/models/current",
                    "skip_existing": "true",
                    # Pin the bundle: a replaced or edited models/current is refused.
                    "expect_model_id": "{{ var.value.captioning_model_id }}",
                    "gpu": "true",
                    "sdk_container_image": "{{ var.value.captioning_image }}",
                },
                "environment": {
                    "tempLocation": "gs://{{ var.value.captioning_bucket }}/tmp",
                    "stagingLocation": "gs://{{ var.value.captioning_bucket }}/staging",
                    "maxWorkers": 8,
                },
            }
        },
        # Waits for the job in the triggerer, not in a worker slot, for the hours a
        # large night takes; the task fails when the job fails.
        deferrable=True,
    )
