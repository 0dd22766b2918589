{{/*
Expand the name of the chart.
*/}}
{{- define "helios-scaler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
Truncated at 63 chars because some Kubernetes name fields are limited to that (by the DNS naming spec).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "helios-scaler.fullname" -}}
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
Chart name and version as used by the chart label.
*/}}
{{- define "helios-scaler.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "helios-scaler.labels" -}}
helm.sh/chart: {{ include "helios-scaler.chart" . }}
{{ include "helios-scaler.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: external-scaler
app.kubernetes.io/part-of: keda
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: stable for the Deployment's lifetime (a selector is immutable).
*/}}
{{- define "helios-scaler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "helios-scaler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount to use.
*/}}
{{- define "helios-scaler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "helios-scaler.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image: repository@digest when a digest is set, else repository:tag with the tag
defaulting to the chart's appVersion.
*/}}
{{- define "helios-scaler.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Where the config file and the Prometheus credentials are mounted. Secrets are mounted as whole
volumes (never subPath) so that kubelet refreshes rotated credentials in place.
*/}}
{{- define "helios-scaler.configDir" -}}/etc/helios-scaler{{- end }}
{{- define "helios-scaler.calendarDir" -}}/etc/helios-calendars{{- end }}
{{- define "helios-scaler.secretsDir" -}}/var/run/secrets/helios-scaler{{- end }}

{{/*
Fail early on combinations the schema cannot express.
*/}}
{{- define "helios-scaler.validateValues" -}}
{{- $auth := .Values.prometheus.auth }}
{{- if and $auth.bearerTokenSecret.name (or $auth.basicAuth.username $auth.basicAuth.passwordSecret.name) }}
{{- fail "prometheus.auth: set either bearerTokenSecret or basicAuth, not both" }}
{{- end }}
{{- if and $auth.basicAuth.username (not $auth.basicAuth.passwordSecret.name) }}
{{- fail "prometheus.auth.basicAuth.username is set but basicAuth.passwordSecret.name is empty" }}
{{- end }}
{{- if and $auth.basicAuth.passwordSecret.name (not $auth.basicAuth.username) }}
{{- fail "prometheus.auth.basicAuth.passwordSecret.name is set but basicAuth.username is empty" }}
{{- end }}
{{- range $probe := list "startupProbe" "livenessProbe" "readinessProbe" }}
{{- $handlers := list }}
{{- range $handler := list "httpGet" "grpc" "tcpSocket" "exec" }}
{{- if get (get $.Values $probe | default dict) $handler }}
{{- $handlers = append $handlers $handler }}
{{- end }}
{{- end }}
{{- if gt (len $handlers) 1 }}
{{- fail (printf "%s has several handlers (%s): Helm merges maps, so null the default one, e.g. --set %s.httpGet=null" $probe (join ", " $handlers) $probe) }}
{{- end }}
{{- end }}
{{- if and .Values.demo.enabled (or .Values.prometheus.url .Values.prometheus.allowedServerAddresses) }}
{{- fail "demo.enabled serves the embedded replay: leave prometheus.url and prometheus.allowedServerAddresses empty" }}
{{- end }}
{{- end }}

{{/*
The server's config file (flat `setting: value` YAML, keys = helios_scaler.config.Settings
fields). Settings derived from structured values first, then .Values.config (the schema keeps the
two disjoint). toYaml sorts keys, so the checksum only changes when the content does.
*/}}
{{/* Where checkpoints live (warm restarts): the `state` volume. */}}
{{- define "helios-scaler.stateDir" -}}
/var/lib/helios-scaler
{{- end }}

{{- define "helios-scaler.config" -}}
{{- $secrets := include "helios-scaler.secretsDir" . }}
{{- $cfg := dict "grpc_port" (int .Values.containerPorts.grpc) "http_port" (int .Values.containerPorts.http) }}
{{- with .Values.prometheus.url }}
{{- $_ := set $cfg "prometheus_url" . }}
{{- end }}
{{- with .Values.prometheus.allowedServerAddresses }}
{{- $_ := set $cfg "allowed_server_addresses" . }}
{{- end }}
{{- if .Values.prometheus.auth.bearerTokenSecret.name }}
{{- $_ := set $cfg "prometheus_bearer_token_file" (printf "%s/bearer-token/token" $secrets) }}
{{- end }}
{{- if .Values.prometheus.auth.basicAuth.username }}
{{- $_ := set $cfg "prometheus_username" .Values.prometheus.auth.basicAuth.username }}
{{- $_ := set $cfg "prometheus_password_file" (printf "%s/basic-auth/password" $secrets) }}
{{- end }}
{{- if .Values.prometheus.tls.caSecret.name }}
{{- $_ := set $cfg "prometheus_ca_file" (printf "%s/ca/ca.crt" $secrets) }}
{{- end }}
{{- if .Values.prometheus.tls.clientCertSecret.name }}
{{- $_ := set $cfg "prometheus_cert_file" (printf "%s/client-tls/tls.crt" $secrets) }}
{{- $_ := set $cfg "prometheus_key_file" (printf "%s/client-tls/tls.key" $secrets) }}
{{- end }}
{{- if or .Values.calendars.files .Values.calendars.existingConfigMap }}
{{- $_ := set $cfg "calendar_dir" (include "helios-scaler.calendarDir" .) }}
{{- end }}
{{- if .Values.state.enabled }}
{{- $_ := set $cfg "state_dir" (include "helios-scaler.stateDir" .) }}
{{- end }}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy (.Values.config | default dict)) }}
{{- toYaml $cfg }}
{{- end }}
