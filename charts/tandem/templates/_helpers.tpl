{{/*
Names, labels and the image reference shared by every template of the chart.
*/}}

{{/* The chart name, overridable for forks that rename the chart. */}}
{{- define "tandem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release-qualified base name of every namespaced object. A release already named after the
chart (the usual `helm install tandem`) is not repeated as `tandem-tandem`.
*/}}
{{- define "tandem.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The operator's Deployment, Service, ServiceAccount and ClusterRole(Binding) name. */}}
{{- define "tandem.operator.fullname" -}}
{{- printf "%s-operator" (include "tandem.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "tandem.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "tandem.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The ClusterRole every data-plane pod is bound to. The operator creates one RoleBinding per
Gateway to it and must be allowed to `bind` it, so the name is part of the contract between the
chart and the operator (`--dataplane-cluster-role`).
*/}}
{{- define "tandem.dataplane.clusterRoleName" -}}
tandem-dataplane
{{- end -}}

{{/* `helm.sh/chart`: chart name and version, as the Helm labelling convention spells it. */}}
{{- define "tandem.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object of the chart carries. */}}
{{- define "tandem.labels" -}}
helm.sh/chart: {{ include "tandem.chart" . }}
{{ include "tandem.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tandem
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The immutable subset of the labels, used in selectors. */}}
{{- define "tandem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tandem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels and selector of the operator's pods. */}}
{{- define "tandem.operator.labels" -}}
{{ include "tandem.labels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tandem.operator.selectorLabels" -}}
{{ include "tandem.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
The single image holding every binary: the operator runs it and hands the same reference to the
data-plane pods it builds. A digest pins it; otherwise the tag defaults to the chart's appVersion.
*/}}
{{- define "tandem.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Where each alert's runbook section lives (docs/observability.md). */}}
{{- define "tandem.runbookUrl" -}}
{{- printf "%s#%s" .root.Values.monitoring.prometheusRule.runbookBaseUrl (lower .alert) -}}
{{- end -}}
