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
{{- $name := include "envctl.fullname" . -}}
{{- $hosts := list $name (printf "%s.%s" $name .Release.Namespace) (printf "%s.%s.svc" $name .Release.Namespace) (printf "%s.%s.svc.cluster.local" $name .Release.Namespace) -}}
{{- if .Values.ingress.enabled -}}
{{- $hosts = append $hosts .Values.ingress.host -}}
{{- end -}}
{{- $given := deepCopy (default (dict) .Values.settings.api) -}}
{{- $hosts = concat $hosts (default (list) $given.allowed_hosts) | uniq -}}
{{- $api := merge (dict "host" "0.0.0.0" "port" (int .Values.api.port) "webhooks" .Values.api.webhooks "source_failure_seconds" (int .Values.api.sourceFailureSeconds) "allowed_hosts" $hosts) $given -}}
{{- $_ := set $settings "api" $api -}}
{{- if .Values.leaderElection.enabled -}}
{{- $_ := set $settings "leader_election" (dict "table" .Values.leaderElection.table "lease_seconds" (int .Values.leaderElection.leaseSeconds)) -}}
{{- end -}}
{{- toYaml $settings -}}
{{- end -}}

{{- define "envctl.image" -}}
{{- $repository := required "image.repository is required: the registry and name you pushed envctl's image to (docker build -t REGISTRY/envctl:0.1.0 . && docker push REGISTRY/envctl:0.1.0)" .Values.image.repository -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}
