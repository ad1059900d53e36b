{{- define "gkewi-worker.fullname" -}}
{{- if contains "gkewi-worker" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-gkewi-worker" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gkewi-worker.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "gkewi-worker.fullname" .) -}}
{{- end -}}

{{- define "gkewi-worker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: gkewi-worker
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "gkewi-worker.selectorLabels" -}}
app.kubernetes.io/name: gkewi-worker
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
