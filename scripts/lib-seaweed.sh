# Sourced by the benchmark scripts: a throwaway SeaweedFS (`weed mini`) S3 server under
# "$W/s3" on free ports, stopped by seaweed_stop. After seaweed_start: EP (the S3 endpoint),
# KEY and SECRET (its credentials, also exported as AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY for aws and boto3), WEED_PID.

seaweed_start() {
    mkdir -p "$W/s3"
    read -r P_MASTER P_VOLUME P_FILER P_S3 P_ADMIN < <(python3 - <<'EOF'
import random, socket
def free(p):
    try:
        s = socket.socket(); s.bind(("127.0.0.1", p)); s.close(); return True
    except OSError:
        return False
got = []
while len(got) < 5:
    p = random.randint(20000, 29999)
    if p not in got and p + 10000 not in got and free(p) and free(p + 10000):
        got.append(p)
print(*got)
EOF
)
    KEY=ZDRBENCH$RANDOM$RANDOM
    SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
    cat >"$W/s3/s3.json" <<EOF
{"identities": [{"name": "zdr", "credentials": [{"accessKey": "$KEY", "secretKey": "$SECRET"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
    local args=(mini "-dir=$W/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 "-s3.config=$W/s3/s3.json"
        -s3.autoCreateBucket=false -webdav=false -admin.ui=false -master.telemetry=false
        "-filer.localSocket=$W/s3/filer.sock" "-s3.localSocket=$W/s3/s3.sock"
        -s3.port.iceberg=0 -s3.port.lance=0)
    local np
    for np in master:$P_MASTER volume:$P_VOLUME filer:$P_FILER s3:$P_S3 admin:$P_ADMIN; do
        args+=("-${np%%:*}.port=${np#*:}" "-${np%%:*}.port.grpc=$(( ${np#*:} + 10000 ))")
    done
    (cd "$W/s3" && TMPDIR="$W/s3" exec setsid weed "${args[@]}" >"$W/s3/weed.log" 2>&1) &
    WEED_PID=$!
    EP=http://127.0.0.1:$P_S3
    export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=us-east-1
    for _ in $(seq 1 600); do
        aws --endpoint-url "$EP" s3api list-buckets >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "SeaweedFS did not start: $(tail -5 "$W/s3/weed.log")" >&2
    return 1
}

seaweed_stop() {
    [ -n "${WEED_PID:-}" ] || return 0
    kill -- "-$WEED_PID" 2>/dev/null || true
    wait "$WEED_PID" 2>/dev/null || true
    rm -f /tmp/seaweedfs-*-"$((P_MASTER + 10000))".sock /tmp/seaweedfs-*-"$((P_VOLUME + 10000))".sock \
        /tmp/seaweedfs-*-"$((P_FILER + 10000))".sock /tmp/seaweedfs-*-"$P_S3".sock 2>/dev/null || true
    WEED_PID=
}
