{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "modelpool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart>, or just <release> when it already contains the
chart name; truncated to 63 characters.
*/}}
{{- define "modelpool.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the leader Lease: the default full name (<release>-<chart>, or <release> when it already
contains the chart name), whatever nameOverride and fullnameOverride say. The release name is fixed
for the release's life, so an upgrade that renames the objects keeps the Lease: the old pods hand
it over as they stop, and two operators never lead at once.
*/}}
{{- define "modelpool.leaseName" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Chart label value: <name>-<version>.
*/}}
{{- define "modelpool.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "modelpool.labels" -}}
helm.sh/chart: {{ include "modelpool.chart" . | quote }}
{{ include "modelpool.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: modelpool
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
{{- end }}

{{/*
Selector labels (immutable on the Deployment: never add to them).
*/}}
{{- define "modelpool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelpool.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{/*
Labels of an object plus the user's extra labels (the dict given as "extra"), rendered as one
mapping without duplicate keys (kustomize and other YAML 1.2 parsers refuse duplicate keys):
an extra label replaces a chart label of the same key, except the selector labels, which always
stay the chart's (the schema refuses them in podLabels). Call with (dict "root" $ "extra" $map).
*/}}
{{- define "modelpool.labelsWith" -}}
{{- $labels := fromYaml (include "modelpool.labels" .root) }}
{{- $labels = mustMergeOverwrite $labels (.extra | default dict) (fromYaml (include "modelpool.selectorLabels" .root)) }}
{{- toYaml $labels }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "modelpool.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelpool.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest when a digest is set, else repository:tag (tag defaults to appVersion).
*/}}
{{- define "modelpool.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Container args of `modelpool [--log-level L] operator run ...`, built from the values.
*/}}
{{- define "modelpool.operatorArgs" -}}
- --log-level={{ .Values.logLevel }}
- operator
- run
- --liveness=http://0.0.0.0:{{ .Values.liveness.port }}{{ .Values.liveness.path }}
- --readiness=http://0.0.0.0:{{ include "modelpool.readinessPort" . }}{{ include "modelpool.readinessPath" . }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- with .Values.prometheusUrl }}
- --prometheus-url={{ . }}
{{- end }}
{{- if .Values.metrics.enabled }}
- --metrics-port={{ .Values.metrics.port }}
{{- end }}
{{- if .Values.verbose }}
- --verbose
{{- end }}
{{- if include "modelpool.leaderElection" . }}
- --leader-elect
- --leader-election-id={{ include "modelpool.leaseName" . }}
{{- end }}
{{- end }}

{{/*
Namespaced permissions the operator needs in every watched namespace (or cluster-wide), exactly
operator/modelpool/permissions.py's RULES (a unit test checks both ways):
  - its own resources: read, watch, patch (kopf finalizers and annotations), and patch of their
    status (every write is a PATCH: server-side apply or merge patch, never an update);
  - update of their finalizers subresource: where the API server enforces owner references'
    permissions (OpenShift), a child whose ownerReference has blockOwnerDeletion needs it;
  - the children it owns: Deployments and Services (watched for kopf's indexes, server-side apply,
    delete of a removed variant's), the policy's router ConfigMap (get, create, patch; removed
    with its policy by the garbage collector), profile ConfigMaps read by name, and the variants'
    PodDisruptionBudgets (listed, not watched: get, list, create, patch, delete);
  - pods listed and watched (readiness, router discovery); the router admin-token Secret read by
    name (get);
  - Events on pools and policies (kopf posts core/v1 Events).
*/}}
{{- define "modelpool.namespacedRules" -}}
- apiGroups: ["modelpool.dev"]
  resources: ["modelpools", "routingpolicies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["modelpool.dev"]
  resources: ["modelpools/status", "routingpolicies/status"]
  verbs: ["patch"]
- apiGroups: ["modelpool.dev"]
  resources: ["modelpools/finalizers", "routingpolicies/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
Cluster-scoped reads kopf needs in every mode: it lists and watches the CRDs to resolve the resources it
serves (without this it logs a warning and cannot see CRD changes). Namespaced mode adds the
namespace list/watch in rbac.yaml.
*/}}
{{- define "modelpool.crdRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}

{{/*
With leader election, in the release namespace only: the leader Lease (leadership.py reads it,
creates it when absent, updates it to take, renew and release it).
*/}}
{{- define "modelpool.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/*
Name of the metrics Service: <fullname>-metrics. A Service name is a DNS-1035 label (at most 63
characters, no dots, starting with a letter), stricter than the names of the other objects: the
full name is cut to 55 characters to keep the "-metrics" suffix, the dots Helm allows in release
names become "-", and a name that starts with a digit (release `1st`) gets an "m" in front.
*/}}
{{- define "modelpool.metricsServiceName" -}}
{{- $base := include "modelpool.fullname" . | replace "." "-" }}
{{- if regexMatch "^[0-9]" $base }}
{{- $base = printf "m%s" $base }}
{{- end }}
{{- $base = $base | trunc 55 | trimSuffix "-" }}
{{- printf "%s-metrics" $base }}
{{- end }}

{{/*
Name of the cluster-scoped ClusterRole and ClusterRoleBinding of a namespaced install. Every
namespaced install needs its own, so the name carries the release's namespace: two teams may
install a release of the same name into their own namespaces (cluster-scoped names are global,
and Helm refuses to adopt another release's object).
*/}}
{{- define "modelpool.namespacedClusterName" -}}
{{- printf "%s-%s-cluster" (include "modelpool.fullname" .) .Release.Namespace }}
{{- end }}

{{/*
A resource quantity ("250m", "1.5Gi", "1e3", 0.5) as a float64, for comparisons.
*/}}
{{- define "modelpool.quantityValue" -}}
{{- $q := toString . }}
{{- $factors := dict "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- $suffix := regexFind "(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)$" $q }}
{{- $number := trimSuffix $suffix $q }}
{{- if hasSuffix "." $number }}{{ $number = printf "%s0" $number }}{{ end }}
{{- if hasPrefix "." $number }}{{ $number = printf "0%s" $number }}{{ end }}
{{- mulf (float64 $number) (get $factors $suffix | default 1.0) }}
{{- end }}

{{/*
A duration of the schema's form (<n>ms, <n>s, <n>m or <n>h) in milliseconds.
*/}}
{{- define "modelpool.durationMs" -}}
{{- $unit := regexFind "(ms|s|m|h)$" . }}
{{- $factors := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 }}
{{- mul (trimSuffix $unit . | int64) (get $factors $unit) }}
{{- end }}

{{/*
"true" when leader election is on, else "". Read nil-safely: a release installed before the value
existed and upgraded with --reuse-values has no leaderElection key, and stays as it was (one
replica, no Lease, Recreate) until the value is set.
*/}}
{{- define "modelpool.leaderElection" -}}
{{- if (.Values.leaderElection | default dict).enabled -}}true{{- end -}}
{{- end }}

{{/*
Port and path of the operator's readiness endpoint (--readiness), read nil-safely with the
defaults of values.yaml: a release installed before the readiness values existed and upgraded with
--reuse-values has no readiness key (or only the one set with --set), and gets 8082 and /readyz.
*/}}
{{- define "modelpool.readinessPort" -}}
{{- (.Values.readiness | default dict).port | default 8082 | int }}
{{- end }}

{{- define "modelpool.readinessPath" -}}
{{- (.Values.readiness | default dict).path | default "/readyz" }}
{{- end }}

{{/*
Checks across values that values.schema.json cannot express; each failure names the values.
*/}}
{{- define "modelpool.validate" -}}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.liveness.port)) }}
{{- fail (printf "metrics.port and liveness.port are both %d: kopf's liveness endpoint and /metrics cannot share a port" (int .Values.metrics.port)) }}
{{- end }}
{{- $readinessPort := include "modelpool.readinessPort" . | int }}
{{- if eq $readinessPort (int .Values.liveness.port) }}
{{- fail (printf "readiness.port and liveness.port are both %d: the operator's readiness endpoint and kopf's liveness endpoint cannot share a port" $readinessPort) }}
{{- end }}
{{- if and .Values.metrics.enabled (eq $readinessPort (int .Values.metrics.port)) }}
{{- fail (printf "readiness.port and metrics.port are both %d: the operator's readiness endpoint and /metrics cannot share a port" $readinessPort) }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not (include "modelpool.leaderElection" .)) }}
{{- fail (printf "replicaCount is %d but leaderElection.enabled is false: without leader election every replica reconciles every pool; set leaderElection.enabled=true (one leader, hot standbys) or replicaCount to 0 or 1" (int .Values.replicaCount)) }}
{{- end }}
{{- if and .Values.rbac.create (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "serviceAccount.name is empty while serviceAccount.create is false: name the ServiceAccount the operator runs as; the chart would otherwise bind the operator's roles to the namespace's default ServiceAccount, which every pod there runs as" }}
{{- end }}
{{- $envNames := list "MODELPOOL_RESYNC_SECONDS" }}
{{- if include "modelpool.leaderElection" . }}
{{- $envNames = append $envNames "POD_NAMESPACE" }}
{{- end }}
{{- range $i, $env := .Values.extraEnv }}
{{- if has $env.name $envNames }}
{{- $why := ternary " (the chart sets it from resyncSeconds)" " (the chart sets it to the pod's namespace, for leader election)" (eq $env.name "MODELPOOL_RESYNC_SECONDS") }}
{{- fail (printf "extraEnv[%d].name %s is set twice%s" $i $env.name (ternary $why "" (has $env.name (list "MODELPOOL_RESYNC_SECONDS" "POD_NAMESPACE")))) }}
{{- end }}
{{- $envNames = append $envNames $env.name }}
{{- end }}
{{- $resources := .Values.resources | default dict }}
{{- $requests := $resources.requests | default dict }}
{{- $limits := $resources.limits | default dict }}
{{- range $name, $request := $requests }}
{{- if and (hasKey $limits $name) (not (kindIs "invalid" $request)) (not (kindIs "invalid" (get $limits $name))) }}
{{- $limit := get $limits $name }}
{{- if gt (include "modelpool.quantityValue" $request | float64) (include "modelpool.quantityValue" $limit | float64) }}
{{- fail (printf "resources.requests.%s (%v) is more than resources.limits.%s (%v): the API server refuses a request above its limit (the chart's default limits apply unless you set them)" $name $request $name $limit) }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.metrics.serviceMonitor }}
{{- if and .enabled .interval .scrapeTimeout }}
{{- if gt (include "modelpool.durationMs" .scrapeTimeout | int64) (include "modelpool.durationMs" .interval | int64) }}
{{- fail (printf "metrics.serviceMonitor.scrapeTimeout (%s) is longer than metrics.serviceMonitor.interval (%s): prometheus-operator rejects such a ServiceMonitor" .scrapeTimeout .interval) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The operator pod's affinity: the user's `affinity`; when it is empty, the user sets no
`topologySpreadConstraints` either, and there are 2 or more replicas (a leader and standbys), a
soft pod anti-affinity on kubernetes.io/hostname over this release's pods, so that a standby runs
on another node than the leader and survives the leader's node (the production overlay's term).
Soft: on a one-node cluster, or with fewer nodes than replicas, all replicas still schedule.
Empty when there is none.
*/}}
{{- define "modelpool.affinity" -}}
{{- if .Values.affinity }}
{{- toYaml .Values.affinity }}
{{- else if and (ge (int .Values.replicaCount) 2) (not .Values.topologySpreadConstraints) -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    # A standby on another node than the leader: a node that dies takes one of them.
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "modelpool.selectorLabels" . | nindent 12 }}
{{- end }}
{{- end }}
