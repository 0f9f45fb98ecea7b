{{/*
The chart name (app.kubernetes.io/name), at most 63 characters.
*/}}
{{- define "nso.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: the release name, followed by the chart name unless
the release name already contains it ("namespace-offloading" for the documented install).
*/}}
{{- define "nso.fullname" -}}
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
Chart name and version, as the helm.sh/chart label.
*/}}
{{- define "nso.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The selector labels: the manifests' one label. Not the instance: the manager is one per
cluster (fixed webhook configuration, Lease and identity names), and a Deployment selector
equal to manifests/'s keeps an installation made with them adoptable.
*/}}
{{- define "nso.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nso.name" . }}
{{- end }}

{{/*
Every object's labels: the selector label and the standard Helm labels (tests/chart.rs
ignores exactly these four when comparing with manifests/).
*/}}
{{- define "nso.labels" -}}
{{ include "nso.selectorLabels" . }}
helm.sh/chart: {{ include "nso.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
{{- end }}

{{/*
The manager's Service as --webhook-service takes it: NAMESPACE/NAME:443.
*/}}
{{- define "nso.webhookService" -}}
{{- printf "%s/%s:443" .Release.Namespace (include "nso.fullname" .) }}
{{- end }}

{{/*
The clusterLabels map as NSO_CLUSTER_LABELS: key=value,key=value, sorted by key.
*/}}
{{- define "nso.clusterLabels" -}}
{{- $pairs := list }}
{{- range $key := keys .Values.clusterLabels | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%v" $key (get $.Values.clusterLabels $key)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/*
The certificate mode, checked.
*/}}
{{- define "nso.certMode" -}}
{{- $mode := .Values.webhook.certificates.mode }}
{{- if not (has $mode (list "self-managed" "cert-manager" "secret")) }}
{{- fail (printf "webhook.certificates.mode must be self-managed, cert-manager or secret, not %q" $mode) }}
{{- end }}
{{- $mode }}
{{- end }}

{{/*
The Secret holding the serving certificate in the modes that mount one.
*/}}
{{- define "nso.tlsSecret" -}}
{{- $mode := include "nso.certMode" . }}
{{- if eq $mode "cert-manager" }}
{{- printf "%s-webhook-cert" (include "nso.fullname" .) }}
{{- else if eq $mode "secret" }}
{{- $name := .Values.webhook.certificates.secret.name }}
{{- if not $name }}
{{- fail "webhook.certificates.secret.name is required with webhook.certificates.mode=secret" }}
{{- end }}
{{- if eq $name "namespace-offloading-webhook-tls" }}
{{- fail "webhook.certificates.secret.name: namespace-offloading-webhook-tls belongs to the self-managed mode (the manager would replace it); use another name" }}
{{- end }}
{{- $name }}
{{- end }}
{{- end }}

{{/*
The cert-manager Certificate of the serving certificate, as cert-manager.io/inject-ca-from
names it.
*/}}
{{- define "nso.certificate" -}}
{{- printf "%s-webhook" (include "nso.fullname" .) }}
{{- end }}
