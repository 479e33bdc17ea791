{{/* The chart's name: app.kubernetes.io/name of the webhook's objects. */}}
{{- define "piw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The webhook's object names: the release name when it contains the chart name. */}}
{{- define "piw.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "piw.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The agent's object names: pod-identity-agent for the release pod-identity-webhook. */}}
{{- define "piw.agentName" -}}
{{- printf "%s-agent" (include "piw.fullname" . | trimSuffix "-webhook") | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The labels Helm adds to every object (not to selectors, which stay as manifests/ has them). */}}
{{- define "piw.helmLabels" -}}
app.kubernetes.io/part-of: pod-identity-webhook
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "piw.labels" -}}
app.kubernetes.io/name: {{ include "piw.name" . }}
{{ include "piw.helmLabels" . }}
{{- end -}}

{{- define "piw.agentLabels" -}}
app.kubernetes.io/name: {{ include "piw.agentName" . }}
{{ include "piw.helmLabels" . }}
{{- end -}}

{{/* The image of every container. */}}
{{- define "piw.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret the webhook serves TLS from. */}}
{{- define "piw.tlsSecret" -}}
{{- if and (eq .Values.certificates.mode "secret") .Values.certificates.secretName -}}
{{- .Values.certificates.secretName -}}
{{- else -}}
{{- printf "%s-tls" (include "piw.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The namespaceSelector of both webhooks. */}}
{{- define "piw.namespaceSelector" -}}
{{- $excluded := concat .Values.webhook.excludedNamespaces (list .Release.Namespace .Values.agent.namespace) | uniq -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: {{ toJson $excluded }}
{{- with .Values.webhook.namespaceSelectorExpressions }}
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}

{{/* Checks of the values, rendered first. */}}
{{- define "piw.validate" -}}
{{- if not (has .Values.certificates.mode (list "selfSigned" "certManager" "secret")) -}}
{{- fail (printf "certificates.mode must be selfSigned, certManager or secret, not %q" .Values.certificates.mode) -}}
{{- end -}}
{{- if not (has .Values.webhook.failurePolicy (list "Ignore" "Fail")) -}}
{{- fail (printf "webhook.failurePolicy must be Ignore or Fail, not %q" .Values.webhook.failurePolicy) -}}
{{- end -}}
{{- if and .Values.webhook.url (not (hasPrefix "https://" .Values.webhook.url)) -}}
{{- fail "webhook.url must start with https://" -}}
{{- end -}}
{{- /* Names go into object names and references unquoted: only DNS names pass. */ -}}
{{- range $key, $value := dict "nameOverride" .Values.nameOverride "fullnameOverride" .Values.fullnameOverride "agent.namespace" .Values.agent.namespace "certificates.secretName" .Values.certificates.secretName "agent.credentialsSecret" .Values.agent.credentialsSecret "priorityClassName" .Values.priorityClassName "agent.priorityClassName" .Values.agent.priorityClassName -}}
{{- if and $value (not (regexMatch "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$" (toString $value))) -}}
{{- fail (printf "%s must be a DNS name (lowercase letters, digits, '-', '.'), not %q" $key (toString $value)) -}}
{{- end -}}
{{- end -}}
{{- if not (regexMatch "^[A-Za-z0-9+/]*={0,2}$" (toString .Values.certificates.caBundle)) -}}
{{- fail "certificates.caBundle must be base64 (of the PEM CA certificate), on one line" -}}
{{- end -}}
{{- if and .Values.agent.enabled (eq .Values.agent.namespace .Release.Namespace) -}}
{{- fail "agent.namespace must not be the release namespace: the agent needs Pod Security privileged, the webhook's namespace stays restricted" -}}
{{- end -}}
{{- end -}}

{{/* The controller's object names: pod-identity-webhook-controller for the release pod-identity-webhook. */}}
{{- define "piw.controllerName" -}}
{{- printf "%s-controller" (include "piw.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "piw.controllerLabels" -}}
app.kubernetes.io/name: {{ include "piw.controllerName" . }}
{{ include "piw.helmLabels" . }}
{{- end -}}
