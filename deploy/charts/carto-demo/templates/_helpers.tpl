{{/*
Base name of the release's objects, as the common library chart names them: the
release name when it contains the chart name, else <release>-<chart>.
*/}}
{{- define "carto-demo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
The backends' KSA, by the CARTO chart's rule: <chart name>-common-backend when the
chart creates it (whatever the release is called), else the name given, "default"
when none.
*/}}
{{- define "carto-demo.serviceAccountName" -}}
{{- if .Values.commonBackendServiceAccount.create -}}
{{- printf "%s-common-backend" .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- default "default" .Values.commonBackendServiceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The web front end's KSA: <fullname>-workspace-www unless named. */}}
{{- define "carto-demo.workspaceWww.serviceAccountName" -}}
{{- if .Values.workspaceWww.serviceAccount.create -}}
{{- default (printf "%s-workspace-www" (include "carto-demo.fullname" .)) .Values.workspaceWww.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.workspaceWww.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "carto-demo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "carto-demo.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
A component's Deployment, Service (when it has a port) and PodDisruptionBudget.
Arguments: root (the chart context), component (name), values (the component's
values), serviceAccountName, backend (true: reads the Google settings).
*/}}
{{- define "carto-demo.component" -}}
{{- $root := .root -}}
{{- $wi := $root.Values.commonBackendServiceAccount.enableGCPWorkloadIdentity -}}
{{- $name := printf "%s-%s" (include "carto-demo.fullname" $root) .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "carto-demo.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  replicas: {{ .values.replicaCount }}
  selector:
    matchLabels:
      {{- include "carto-demo.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "carto-demo.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
      {{- if or .backend .values.podAnnotations }}
      annotations:
        {{- if .backend }}
        checksum/config: {{ $root.Values.appConfigValues | toJson | sha256sum }}
        {{- end }}
        {{- with .values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
    spec:
      serviceAccountName: {{ .serviceAccountName }}
      {{- with .values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: "{{ .values.image.repository }}:{{ .values.image.tag | default $root.Chart.AppVersion }}"
          imagePullPolicy: {{ .values.image.pullPolicy }}
          {{- if .backend }}
          envFrom:
            - configMapRef:
                name: {{ $name }}
          {{- end }}
          env:
            {{- if and .backend (not $wi) }}
            - name: GOOGLE_APPLICATION_CREDENTIALS
              value: /var/secrets/google/{{ $root.Values.googleCredentialsSecret.key }}
            {{- end }}
            {{- with .values.extraEnvVars }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with .values.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- if and .backend (not $wi) $root.Values.googleCredentialsSecret.name }}
          volumeMounts:
            - name: google-credentials
              mountPath: /var/secrets/google
              readOnly: true
          {{- end }}
      {{- if and .backend (not $wi) $root.Values.googleCredentialsSecret.name }}
      volumes:
        - name: google-credentials
          secret:
            secretName: {{ $root.Values.googleCredentialsSecret.name }}
      {{- end }}
{{- with .values.service }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "carto-demo.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $.component }}
spec:
  selector:
    {{- include "carto-demo.selectorLabels" $ | nindent 4 }}
  ports:
    - name: http
      port: {{ .port }}
      targetPort: {{ .port }}
{{- end }}
{{- if .values.pdb.create }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  labels:
    {{- include "carto-demo.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  minAvailable: {{ .values.pdb.minAvailable }}
  selector:
    matchLabels:
      {{- include "carto-demo.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/*
A backend's ConfigMap: its settings, the BigQuery connection's when enabled.
Arguments: root, component.
*/}}
{{- define "carto-demo.backendConfigMap" -}}
{{- $root := .root -}}
{{- $conn := $root.Values.appConfigValues.workloadIdentityConnection -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "carto-demo.fullname" $root }}-{{ .component }}
  labels:
    {{- include "carto-demo.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
data:
  SELFHOSTED_DOMAIN: {{ $root.Values.appConfigValues.selfHostedDomain | quote }}
  WORKSPACE_WORKLOAD_IDENTITY_ENABLED: {{ $root.Values.commonBackendServiceAccount.enableGCPWorkloadIdentity | quote }}
  {{- if $conn.enabled }}
  WORKSPACE_WORKLOAD_IDENTITY_WORKFLOWS_TEMP: {{ $conn.workflowsTempLocation | quote }}
  WORKSPACE_WORKLOAD_IDENTITY_BILLING_PROJECT: {{ $conn.billingProject | quote }}
  WORKSPACE_WORKLOAD_IDENTITY_SERVICE_ACCOUNT_EMAIL: {{ $conn.serviceAccountEmail | quote }}
  WORKSPACE_WORKLOAD_IDENTITY_CONNECTION_OWNER_ID: {{ $conn.connectionOwner | quote }}
  {{- end }}
{{- end -}}
