{{- define "envctl.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "envctl.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "envctl.labels" -}}
app.kubernetes.io/name: {{ include "envctl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "envctl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "envctl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "envctl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "envctl.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "envctl.replicas" -}}
{{- if .Values.leaderElection.enabled -}}
{{- max 2 (int .Values.replicaCount) -}}
{{- else -}}
1
{{- end -}}
{{- end -}}

{{- define "envctl.settings" -}}
{{- $settings := deepCopy .Values.settings -}}
{{- $_ := set $settings "api" (dict "host" "0.0.0.0" "port" (int .Values.api.port) "webhooks" .Values.api.webhooks "source_failure_seconds" (int .Values.api.sourceFailureSeconds)) -}}
{{- if .Values.leaderElection.enabled -}}
{{- $_ := set $settings "leader_election" (dict "table" .Values.leaderElection.table "lease_seconds" (int .Values.leaderElection.leaseSeconds)) -}}
{{- end -}}
{{- toYaml $settings -}}
{{- end -}}
