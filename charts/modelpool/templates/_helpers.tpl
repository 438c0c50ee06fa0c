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
Chart label value: <name>-<version>.
*/}}
{{- define "modelpool.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "modelpool.labels" -}}
helm.sh/chart: {{ include "modelpool.chart" . }}
{{ include "modelpool.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: modelpool
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels (immutable on the Deployment: never add to them).
*/}}
{{- define "modelpool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelpool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
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
{{- end }}

{{/*
Namespaced permissions the operator needs in every watched namespace (or cluster-wide):
  - its own resources: read, watch, patch (kopf finalizers and annotations), and their status;
  - the children it owns: Deployments, Services and ConfigMaps (server-side apply, delete);
  - pods (readiness, router discovery) read-only; the router admin-token Secret read-only (get);
  - Events on pools and policies (kopf posts core/v1 Events; events.k8s.io for newer clients).
*/}}
{{- define "modelpool.namespacedRules" -}}
- apiGroups: ["modelpool.dev"]
  resources: ["modelpools", "routingpolicies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["modelpool.dev"]
  resources: ["modelpools/status", "routingpolicies/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
Cluster-scoped reads kopf needs in every mode: it scans the CRDs to resolve the resources it
serves (without this it logs a warning and cannot see CRD changes). Namespaced mode adds the
namespace list/watch in rbac.yaml.
*/}}
{{- define "modelpool.crdRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end }}
