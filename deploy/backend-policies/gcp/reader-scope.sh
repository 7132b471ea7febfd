#!/bin/sh
# A per-scope reader for task pods: `roles/secretmanager.secretAccessor`
# on the project, limited by an IAM condition to the secret ids of one
# broker scope. Ids are the encoded `{prefix}{path}` (src/store/encode.rs):
# `/` → `_s`, `.` → `_d`, `_` → `_u`, so scope `acme/tasks/t-42` with an
# empty prefix is the id prefix `acme_stasks_st-42_s` (the trailing `_s`
# keeps `acme/tasks/t-420/...` out). Replace PROJECT_ID, PROJECT_NUMBER
# and the member.
set -eu
SCOPE_ID_PREFIX="acme_stasks_st-42_s"
gcloud projects add-iam-policy-binding PROJECT_ID \
  --member="serviceAccount:task-t-42@PROJECT_ID.iam.gserviceaccount.com" \
  --role="roles/secretmanager.secretAccessor" \
  --condition="title=secret-broker scope acme/tasks/t-42,expression=resource.name.startsWith(\"projects/PROJECT_NUMBER/secrets/${SCOPE_ID_PREFIX}\")"
