{{/* Base name of the release's objects. */}}
{{- define "carto-legacy.fullname" -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/*
The backend KSA, by the CARTO chart's rule: <chart name>-common-backend when the
chart creates it (whatever the release is called), else the name given, "default"
when none.
*/}}
{{- define "carto-legacy.serviceAccountName" -}}
{{- if .Values.commonBackendServiceAccount.create -}}
{{- printf "%s-common-backend" .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- default "default" .Values.commonBackendServiceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "carto-legacy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "carto-legacy.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Pod spec shared by the backend components. Arguments: root (the chart
context), component (name), values (the component's values).
*/}}
{{- define "carto-legacy.backendPodSpec" -}}
{{- $wi := .root.Values.commonBackendServiceAccount.enableGCPWorkloadIdentity -}}
serviceAccountName: {{ include "carto-legacy.serviceAccountName" .root }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: {{ .component }}
    image: "{{ .values.image.repository }}:{{ .values.image.tag | default .root.Chart.AppVersion }}"
    imagePullPolicy: {{ .values.image.pullPolicy }}
    env:
      - name: WORKSPACE_WORKLOAD_IDENTITY_ENABLED
        value: {{ $wi | quote }}
      {{- if not $wi }}
      - name: GOOGLE_APPLICATION_CREDENTIALS
        value: /var/secrets/google/{{ .root.Values.googleCredentialsSecret.key }}
      {{- end }}
      {{- with .values.extraEnvVars }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with .values.resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- if and (not $wi) .root.Values.googleCredentialsSecret.name }}
    volumeMounts:
      - name: google-credentials
        mountPath: /var/secrets/google
        readOnly: true
    {{- end }}
{{- if and (not $wi) .root.Values.googleCredentialsSecret.name }}
volumes:
  - name: google-credentials
    secret:
      secretName: {{ .root.Values.googleCredentialsSecret.name }}
{{- end }}
{{- end -}}
