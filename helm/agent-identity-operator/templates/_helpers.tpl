{{/* Name prefix of the chart's namespaced objects: the release name when it already says
"agent-identity", else "<release>-agent-identity". */}}
{{- define "ai.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains "agent-identity" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-agent-identity" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ai.operatorName" -}}{{ include "ai.fullname" . }}-operator{{- end -}}
{{- define "ai.admissionName" -}}{{ include "ai.fullname" . }}-admission{{- end -}}
{{- define "ai.decisionsName" -}}{{ include "ai.fullname" . }}-decisions{{- end -}}
{{- define "ai.tlsSecret" -}}{{ .Values.admission.tls.secretName | default (printf "%s-admission-tls" (include "ai.fullname" .)) }}{{- end -}}
{{- define "ai.tlsLease" -}}{{ .Values.admission.tls.leaseName | default (printf "%s-admission-tls" (include "ai.fullname" .)) }}{{- end -}}
{{/* Cluster-scoped objects are named after the release (two releases need two names). */}}
{{- define "ai.clusterName" -}}{{ include "ai.fullname" . }}{{- end -}}
{{/* Both webhook configurations share one name, as the admission process's builder
(agent_identity.admission.webhookconfig) names them. */}}
{{- define "ai.validatingWebhook" -}}{{ include "ai.clusterName" . }}{{- end -}}
{{- define "ai.mutatingWebhook" -}}{{ include "ai.clusterName" . }}{{- end -}}

{{- define "ai.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Labels of every object: include "ai.labels" (list . "admission"). The name is
agent-identity-<component>: the operator's Agent NetworkPolicies let agents reach the
decision API pods by app.kubernetes.io/name=agent-identity-admission
(agent_identity.identity.network.DECISION_API_LABELS). */}}
{{- define "ai.labels" -}}
{{- $root := index . 0 -}}
{{ include "ai.selector" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: agent-identity
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include "ai.selector" (list . "operator") */}}
{{- define "ai.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: agent-identity-{{ index . 1 }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Pod Security "restricted": what every pod of the chart runs with. */}}
{{- define "ai.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ai.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The namespaces our webhooks never see: kube-system, our own, and any the user adds. */}}
{{- define "ai.excludedNamespaces" -}}
{{- $ns := list "kube-system" .Release.Namespace -}}
{{- range .Values.admission.excludedNamespaces }}{{ $ns = append $ns . }}{{ end -}}
{{- toJson (sortAlpha (uniq $ns)) -}}
{{- end -}}

{{/* DNS names of the serving certificate: the webhook and decision API Services. */}}
{{- define "ai.servingDNSNames" -}}
{{- $names := list -}}
{{- range $svc := list (include "ai.admissionName" .) (include "ai.decisionsName" .) -}}
{{- $names = append $names (printf "%s.%s.svc" $svc $.Release.Namespace) -}}
{{- $names = append $names (printf "%s.%s.svc.cluster.local" $svc $.Release.Namespace) -}}
{{- $names = append $names (printf "%s.%s" $svc $.Release.Namespace) -}}
{{- $names = append $names $svc -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}
