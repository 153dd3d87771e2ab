{{/* Names and labels shared by every template. */}}

{{- define "processor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "processor.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "processor.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "processor.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "processor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "processor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: claimable-sandbox-processor
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "ingress"). */}}
{{- define "processor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "processor.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "processor.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "processor.secretName" -}}
{{- default (printf "%s-secrets" (include "processor.fullname" .)) .Values.secrets.name -}}
{{- end -}}

{{- define "processor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "processor.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Environment of every processor container: settings from the ConfigMap, secrets from the Secret. */}}
{{- define "processor.envFrom" -}}
- configMapRef:
    name: {{ include "processor.fullname" . }}-config
- secretRef:
    name: {{ include "processor.secretName" . }}
{{- end -}}

{{/* Pod annotations that roll the pods when the chart-managed config or secret changes. */}}
{{- define "processor.checksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if .Values.secrets.create }}
checksum/secrets: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end -}}

{{- define "processor.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The topic specs from processor/eventlog/kafka/topics.py (files/topics.yaml is generated; tests/deploy checks it). */}}
{{- define "processor.topics" -}}
{{- (.Files.Get "files/topics.yaml" | fromYaml).topics | toJson -}}
{{- end -}}

{{/* Kafka credentials of one role's pods: call with (dict "root" $ "component" "ingress"). With kafkaUsers.create
each role has its own Strimzi user and Secret (<fullname>-<component>); otherwise all share kafkaSecurity's. */}}
{{- define "processor.kafkaEnv" -}}
{{- $sec := .root.Values.kafkaSecurity -}}
{{- $user := printf "%s-%s" (include "processor.fullname" .root) .component -}}
{{- if hasPrefix "SASL_" $sec.protocol }}
{{- if .root.Values.kafkaUsers.create }}
- name: PROCESSOR_KAFKA_SASL_USERNAME
  value: {{ $user | quote }}
- name: PROCESSOR_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $user | quote }}, key: password}
{{- else }}
- name: PROCESSOR_KAFKA_SASL_USERNAME
  value: {{ required "kafkaSecurity.saslUsername is required with SASL_*" $sec.saslUsername | quote }}
- name: PROCESSOR_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "kafkaSecurity.saslPasswordSecret.name is required with SASL_*" $sec.saslPasswordSecret.name | quote }}
      key: {{ $sec.saslPasswordSecret.key | quote }}
{{- end }}
{{- end }}
{{- if and (eq $sec.protocol "SSL") (or .root.Values.kafkaUsers.create $sec.clientCertSecret.name) }}
- name: PROCESSOR_KAFKA_SSL_CERTFILE
  value: /etc/processor/kafka-client/{{ $sec.clientCertSecret.certKey }}
- name: PROCESSOR_KAFKA_SSL_KEYFILE
  value: /etc/processor/kafka-client/{{ $sec.clientCertSecret.keyKey }}
{{- end }}
{{- end -}}

{{/* Volumes with the Kafka CA and client certificate (same call as processor.kafkaEnv), plus extraVolumes. */}}
{{- define "processor.kafkaVolumes" -}}
{{- $sec := .root.Values.kafkaSecurity -}}
{{- if and (hasSuffix "SSL" $sec.protocol) $sec.caSecret.name }}
- name: kafka-ca
  secret: {secretName: {{ $sec.caSecret.name | quote }}, defaultMode: 0444}
{{- end }}
{{- if and (eq $sec.protocol "SSL") (or .root.Values.kafkaUsers.create $sec.clientCertSecret.name) }}
- name: kafka-client
  secret:
    secretName: {{ ternary (printf "%s-%s" (include "processor.fullname" .root) .component) $sec.clientCertSecret.name .root.Values.kafkaUsers.create | quote }}
    defaultMode: 0440
{{- end }}
{{- with .root.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "processor.kafkaVolumeMounts" -}}
{{- $sec := .root.Values.kafkaSecurity -}}
{{- if and (hasSuffix "SSL" $sec.protocol) $sec.caSecret.name }}
- {name: kafka-ca, mountPath: /etc/processor/kafka-ca, readOnly: true}
{{- end }}
{{- if and (eq $sec.protocol "SSL") (or .root.Values.kafkaUsers.create $sec.clientCertSecret.name) }}
- {name: kafka-client, mountPath: /etc/processor/kafka-client, readOnly: true}
{{- end }}
{{- with .root.Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The least-privilege ACLs of every role (files/acls.yaml is generated from processor/eventlog/kafka/acls.py). */}}
{{- define "processor.acls" -}}
{{- (.Files.Get "files/acls.yaml" | fromYaml).roles | toJson -}}
{{- end -}}
