#!/bin/sh
# Writes the MinIO keys of docker/docker-compose.yml as three git-ignored secret files beside this
# script: minio_root_user and minio_root_password (MinIO's root user) and s3_credentials (the same
# keys as an AWS credentials file, read by prunetune on every node through
# AWS_SHARED_CREDENTIALS_FILE). Keeps files that exist. Then make s3_credentials readable by the
# image's `ray` user (uid 1000), as ray_auth_token: see docker/README.md.
set -eu
cd "$(dirname "$0")"
[ -e minio_root_user ] || printf 'prunetune\n' > minio_root_user
[ -e minio_root_password ] || python3 -c "import secrets; print(secrets.token_hex(24))" > minio_root_password
if [ ! -e s3_credentials ]; then
    printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
        "$(cat minio_root_user)" "$(cat minio_root_password)" > s3_credentials
fi
chmod 600 minio_root_user minio_root_password s3_credentials
