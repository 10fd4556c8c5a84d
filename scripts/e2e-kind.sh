#!/usr/bin/env bash
# End-to-end test of the Kubernetes deployment on a throwaway kind cluster:
#   kind cluster -> build + kind load images -> make deploy ENV=kind ->
#   the real CLI via kubectl port-forward (pkbs login, qsub, qstat, pkbs fetch) ->
#   results checked through the dispatcher and directly on WebDAV ->
#   workers scaled down (and one killed) while jobs run: every job must still finish ->
#   make deploy ENV=pods: jobs as pods of their own (output, files, qdel, RBAC).
#
#   make e2e                      (or: bash scripts/e2e-kind.sh)
#   KEEP_CLUSTER=1 make e2e       leave the cluster up afterwards for a look
#
# Needs Docker and kind (and a registry for kind's node image); without a working
# `docker info` it says so and fails. `make e2e` runs tests/containers where kind cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DOCKER=${DOCKER:-docker}
KIND=${KIND:-kind}
MAKE=${MAKE:-make}
KUBECTL=${KUBECTL:-$ROOT/.venv/bin/kubectl}
PKBS_BIN=${PKBS_BIN:-$ROOT/.venv/bin}
KIND_CLUSTER=${KIND_CLUSTER:-pkbs-e2e}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
SCALE_JOBS=${SCALE_JOBS:-12}
JOB_TIMEOUT=${JOB_TIMEOUT:-600}

if ! "$DOCKER" info >/dev/null 2>&1; then
  echo "e2e: 'docker info' failed: there is no Docker daemon to run kind on (make docker-host)." >&2
  exit 1
fi
if ! command -v "$KIND" >/dev/null 2>&1; then
  echo "e2e: Docker works but kind is missing: install kind v0.33.0 (e.g. 'go install sigs.k8s.io/kind@v0.33.0') or set KIND=/path/to/kind" >&2
  exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pkbs-e2e.XXXXXX")
export KUBECONFIG=$WORK/kubeconfig          # never touch the user's kubeconfig
export PKBS_HOME=$WORK/home                 # the CLI's login lives here
export PATH="$PKBS_BIN:$PATH"
PIDS=()

log() { printf '\n==> %s\n' "$*"; }
k() { "$KUBECTL" "$@"; }

diagnose() {
  log "diagnostics"
  k get pods,svc,pvc,hpa -A -o wide || true
  k -n pkbs get events --sort-by=.lastTimestamp | tail -n 40 || true
  for sel in dispatcher worker nats; do
    k -n pkbs logs -l app.kubernetes.io/name=$sel --tail=80 --prefix --all-containers || true
  done
  k -n pkbs-system logs -l app.kubernetes.io/name=webdav --tail=40 --prefix || true
  k -n pkbs-jobs get pods -o wide --show-labels || true
  k -n pkbs-jobs get events --sort-by=.lastTimestamp | tail -n 40 || true
}

cleanup() {
  local rc=$?
  [ $rc -ne 0 ] && diagnose
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$KEEP_CLUSTER" = 1 ]; then
    echo "e2e: cluster kept: KUBECONFIG=$KUBECONFIG; delete with: $KIND delete cluster --name $KIND_CLUSTER"
  else
    "$KIND" delete cluster --name "$KIND_CLUSTER" >/dev/null 2>&1 || true
    rm -rf "$WORK"
  fi
  if [ $rc -eq 0 ]; then echo "e2e: PASSED"; else echo "e2e: FAILED (exit $rc)"; fi
  exit $rc
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

port_forward() {  # namespace service remote-port -> prints the local port
  local port; port=$(free_port)
  k -n "$1" port-forward "svc/$2" "$port:$3" >"$WORK/pf-$2.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; then
      echo "$port"; return 0
    fi
    sleep 0.2
  done
  echo "e2e: port-forward to $2 did not come up" >&2; cat "$WORK/pf-$2.log" >&2; return 1
}

state_of() { qstat -x -f "$1" 2>/dev/null | sed -n 's/^ *job_state = //p' | head -n 1; }

wait_finished() {  # job ids...: every one reaches F with Exit_status = 0
  local deadline=$((SECONDS + JOB_TIMEOUT)) j
  for j in "$@"; do
    until [ "$(state_of "$j")" = F ]; do
      if [ $SECONDS -gt $deadline ]; then echo "e2e: $j not finished after ${JOB_TIMEOUT}s" >&2; qstat -x -f "$j" >&2 || true; return 1; fi
      sleep 1
    done
    if ! qstat -x -f "$j" | grep -q 'Exit_status = 0$'; then
      echo "e2e: $j did not exit 0" >&2; qstat -x -f "$j" >&2; return 1
    fi
  done
}

wait_for() {  # seconds description command...: until the command succeeds
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    if [ $SECONDS -gt $deadline ]; then echo "e2e: timed out waiting for $what" >&2; return 1; fi
    sleep 1
  done
}

fetch_expect() {  # job-id text: `pkbs fetch` brings back an .o file containing text
  local dir=$WORK/fetch/$1
  pkbs fetch "$1" "$dir" >/dev/null
  if ! cat "$dir"/*.o* 2>/dev/null | grep -qF -- "$2"; then
    echo "e2e: output of $1 lacks '$2':" >&2; ls -la "$dir" >&2; cat "$dir"/*.o* >&2 || true; return 1
  fi
}

log "kind cluster $KIND_CLUSTER"
"$MAKE" kind-up KIND_CLUSTER="$KIND_CLUSTER"

TAG="e2e-$(date +%s)"
log "make deploy ENV=kind IMAGE_TAG=$TAG"
"$MAKE" deploy ENV=kind IMAGE_TAG="$TAG" KIND_CLUSTER="$KIND_CLUSTER"
k -n pkbs get pods -o wide

log "CLI through kubectl port-forward"
DPORT=$(port_forward pkbs dispatcher 8000)
TOKEN=$(python3 scripts/k8s-secrets.py --print-token)
pkbs login --endpoint "http://127.0.0.1:$DPORT" --token "$TOKEN"

log "examples: stdin, a #PBS script, a directory, a job that submits a job"
j_stdin=$(echo 'echo hello-stdin; python3 -c "print(6*7)"' | qsub -N e2e-stdin)
j_calc=$(qsub -N calc examples/calculation/calc.sh)
j_dir=$(qsub -N hello-world examples/hello-world)
# shellcheck disable=SC2016  # the job's shell expands it, not this one
j_parent=$(echo 'child=$(echo "echo from-child" | qsub -N e2e-child); echo "child=$child"' | qsub -N e2e-parent)
extra=()
for d in examples/*/; do
  d=${d%/}
  [ -f "$d/run.sh" ] && [ "$d" != examples/hello-world ] && extra+=("$(qsub -N "$(basename "$d")" "$d")")
done
echo "submitted: $j_stdin $j_calc $j_dir $j_parent ${extra[*]:-}"
wait_finished "$j_stdin" "$j_calc" "$j_dir" "$j_parent" "${extra[@]}"
fetch_expect "$j_stdin" hello-stdin
fetch_expect "$j_stdin" 42
fetch_expect "$j_calc" "sum of 1..100 = 5050"
fetch_expect "$j_dir" "hello from"
fetch_expect "$j_parent" "child="
child=$(cat "$WORK/fetch/$j_parent"/*.o* | sed -n 's/^child=//p' | head -n 1)
[ -n "$child" ] || { echo "e2e: the parent job did not get a job id from qsub" >&2; exit 1; }
wait_finished "$child"
fetch_expect "$child" from-child
qstat -x

log "results are on WebDAV"
WPORT=$(port_forward pkbs-system webdav 8080)
WEBDAV_USER=$(sed -n 's/^user=//p' manifests/base/secrets/webdav.env)
WEBDAV_PASSWORD=$(sed -n 's/^password=//p' manifests/base/secrets/webdav.env)
WEBDAV_URL="http://127.0.0.1:$WPORT/pkbs/" WEBDAV_USER=$WEBDAV_USER WEBDAV_PASSWORD=$WEBDAV_PASSWORD \
python3 - "$j_stdin" "$j_calc" "$j_dir" <<'EOF'
"""Walk the WebDAV tree (PROPFIND Depth: 1) and require an .o file under each job id."""
import base64, os, sys, urllib.parse, urllib.request, xml.etree.ElementTree as ET

auth = base64.b64encode(f"{os.environ['WEBDAV_USER']}:{os.environ['WEBDAV_PASSWORD']}".encode()).decode()
root = os.environ["WEBDAV_URL"]
origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(root))

def children(url):
    req = urllib.request.Request(url, method="PROPFIND", headers={"Depth": "1", "Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        tree = ET.fromstring(resp.read())
    for r in tree.iter("{DAV:}response"):
        href = urllib.parse.unquote(r.findtext("{DAV:}href"))
        full = urllib.parse.urljoin(origin, href)
        if full.rstrip("/") != url.rstrip("/"):
            yield full, r.find(".//{DAV:}collection") is not None

paths, todo = [], [root]
while todo and len(paths) < 10000:
    for url, is_dir in children(todo.pop()):
        (todo if is_dir else paths).append(url)
for job in sys.argv[1:]:
    hits = [p for p in paths if f"/{job}/" in p and ".o" in p.rsplit("/", 1)[-1]]
    if not hits:
        sys.exit(f"e2e: no .o file for {job} on WebDAV ({len(paths)} files seen)")
    print(f"{job}: {hits[0]}")
EOF

log "scale workers 1 -> 3 -> 1 while $SCALE_JOBS jobs run; kill one worker outright"
k -n pkbs delete hpa worker-hpa --ignore-not-found    # no autoscaler fighting kubectl scale
k -n pkbs scale deployment/worker --replicas=3
k -n pkbs rollout status deployment/worker --timeout=180s
scale_jobs=()
for i in $(seq 1 "$SCALE_JOBS"); do
  scale_jobs+=("$(echo "sleep 12; echo done-$i" | qsub -N "scale-$i")")
done
deadline=$((SECONDS + 180))
until [ "$(for j in "${scale_jobs[@]}"; do state_of "$j"; done | grep -c '^R$')" -ge 3 ]; do
  [ $SECONDS -lt $deadline ] || { echo "e2e: jobs never started running" >&2; exit 1; }
  sleep 1
done
victim=$(k -n pkbs get pods -l app.kubernetes.io/name=worker -o jsonpath='{.items[0].metadata.name}')
echo "force-deleting $victim (no drain: its jobs must be redelivered)"
k -n pkbs delete pod "$victim" --grace-period=0 --force --wait=false
echo "scaling down to 1 (SIGTERM: the others drain)"
k -n pkbs scale deployment/worker --replicas=1
wait_finished "${scale_jobs[@]}"
for i in $(seq 1 "$SCALE_JOBS"); do
  fetch_expect "${scale_jobs[$((i - 1))]}" "done-$i"
done
echo "all $SCALE_JOBS jobs finished with exit 0 and their output: nothing lost"

log "dispatcher metrics and health"
curl -fsS "http://127.0.0.1:$DPORT/healthz" >/dev/null
curl -fsS "http://127.0.0.1:$DPORT/metrics" | grep -q '^# TYPE' || { echo "e2e: /metrics has no metrics" >&2; exit 1; }

log "pod jobs: make deploy ENV=pods (every job a pod of its own in pkbs-jobs)"
"$MAKE" deploy ENV=pods IMAGE_TAG="$TAG" KIND_CLUSTER="$KIND_CLUSTER" SKIP_IMAGES=1
k -n pkbs rollout status deployment/worker --timeout=300s
WORKER_IMAGE="pkbs-worker:$TAG"
SA=system:serviceaccount:pkbs:worker

can() { [ "$(k auth can-i "$@" --as="$SA" 2>/dev/null)" = yes ]; }
if ! { can create pods -n pkbs-jobs && can create pods/exec -n pkbs-jobs && can get pods/log -n pkbs-jobs; }; then
  echo "e2e: the workers' service account cannot manage pods in pkbs-jobs" >&2; exit 1
fi
for denied in "get secrets -n pkbs" "create pods -n pkbs" "get secrets -n pkbs-jobs" "list pods -A"; do
  # shellcheck disable=SC2086  # one can-i question per string
  if can $denied; then echo "e2e: the workers' service account may $denied" >&2; exit 1; fi
done

pods_of() { k -n pkbs-jobs get pods -l "pkbs.job=$1" -o name 2>/dev/null; }
no_pod() { [ -z "$(pods_of "$1")" ]; }
pod_running() {
  [ "$(k -n pkbs-jobs get pods -l "pkbs.job=$1" -o jsonpath='{.items[*].status.phase}' 2>/dev/null)" = Running ] \
    && [ "$(state_of "$1")" = R ]
}
finished() { [ "$(state_of "$1")" = F ]; }

# shellcheck disable=SC2016  # the job's shell expands them, not this one
j_pod=$(printf '%s\n' 'echo "hello from pod $(hostname)"' 'echo to-stderr >&2' \
  'echo computed > result.txt' 'echo plotted > /output/plot.txt' 'qstat -f "$PBS_JOBID" | grep -q "job_state = R" && echo qstat-in-pod' \
  | qsub -N e2e-pod -v "CONTAINER_IMAGE=$WORKER_IMAGE")
echo "submitted $j_pod"
wait_finished "$j_pod"
fetch_expect "$j_pod" "hello from pod pkbs-"
fetch_expect "$j_pod" qstat-in-pod
dir=$WORK/fetch/$j_pod
grep -q to-stderr "$dir"/*.e* || { echo "e2e: $j_pod: stderr not apart in .e" >&2; ls -la "$dir" >&2; exit 1; }
grep -qx computed "$dir/result.txt" || { echo "e2e: $j_pod: result.txt missing" >&2; exit 1; }
grep -qx plotted "$dir/output/plot.txt" || { echo "e2e: $j_pod: output/plot.txt missing" >&2; exit 1; }
wait_for 60 "the pod of $j_pod to be deleted" no_pod "$j_pod"

j_qdel=$(echo 'sleep 600' | qsub -N e2e-pod-qdel -v "CONTAINER_IMAGE=$WORKER_IMAGE")
wait_for 180 "a running pod for $j_qdel" pod_running "$j_qdel"
pods_of "$j_qdel"
qdel "$j_qdel"
wait_for 120 "$j_qdel to finish" finished "$j_qdel"
qstat -x -f "$j_qdel" | grep -q 'Exit_status = 271$' \
  || { echo "e2e: qdel of a pod job: not Exit_status 271" >&2; qstat -x -f "$j_qdel" >&2; exit 1; }
wait_for 60 "the pod of $j_qdel to be deleted" no_pod "$j_qdel"
echo "pod jobs: output and files fetched, qdel ended its pod"
