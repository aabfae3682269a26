{{/* Names, labels and small shared snippets. */}}

{{- define "qscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name; the release name alone when it already contains the chart name. */}}
{{- define "qscale.fullname" -}}
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

{{- define "qscale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Component name: <fullname>-<component>, trimmed to 63 characters. */}}
{{- define "qscale.componentName" -}}
{{- printf "%s-%s" (include "qscale.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "qscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "qscale.labels" -}}
helm.sh/chart: {{ include "qscale.chart" . }}
{{ include "qscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: qscale
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component: {{ include "qscale.componentLabels" (dict "root" $ "component" "worker") }} */}}
{{- define "qscale.componentLabels" -}}
{{ include "qscale.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "qscale.componentSelectorLabels" -}}
{{ include "qscale.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
image: {{ include "qscale.image" (dict "image" .Values.image "root" $) }}
[registry/]repository(:tag|@digest); the registry is the image's own `registry`, else
global.imageRegistry, else none; the tag defaults to the chart's appVersion.
*/}}
{{- define "qscale.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- $registry := .image.registry | default (dig "imageRegistry" "" (.root.Values.global | default dict)) -}}
{{- $repository := .image.repository -}}
{{- if $registry }}{{ $repository = printf "%s/%s" (trimSuffix "/" $registry) $repository }}{{ end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end }}

{{/* ---- cordon: the controller's "take no new tasks" for busy pods it wants gone ---- */}}

{{/* True when the controller cordons busy pods: it and the workers share the control token. */}}
{{- define "qscale.cordon.enabled" -}}
{{- if and .Values.controller.enabled .Values.autoscaling.cordon.enabled -}}
true
{{- end -}}
{{- end }}

{{- define "qscale.cordon.secretName" -}}
{{- .Values.autoscaling.cordon.existingSecret | default (include "qscale.componentName" (dict "root" . "component" "control-token")) }}
{{- end }}

{{/* QSCALE_CONTROL_TOKEN from the token Secret (workers of autoscaled pools, controller). */}}
{{- define "qscale.cordon.env" -}}
- name: QSCALE_CONTROL_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "qscale.cordon.secretName" . }}
      key: {{ .Values.autoscaling.cordon.tokenKey }}
{{- end }}

{{/* ---- broker ---- */}}

{{/* Queue declaration settings, identical for workers and the controller. */}}
{{- define "qscale.broker.queueEnv" -}}
{{- $q := .Values.broker.queues -}}
{{- if and (eq $q.amqpQueueType "quorum") (gt (int $q.maxPriority) 0) -}}
{{- fail "broker.queues: quorum queues have no priorities; set maxPriority to 0 or amqpQueueType to classic" -}}
{{- end -}}
- name: QSCALE_AMQP_QUEUE_TYPE
  value: {{ $q.amqpQueueType | quote }}
- name: QSCALE_MAX_REDELIVERIES
  value: {{ $q.maxRedeliveries | quote }}
- name: QSCALE_MAX_PRIORITY
  value: {{ $q.maxPriority | quote }}
{{- end }}

{{/* True when the chart runs a Redis: as the broker, or as the results store next to RabbitMQ. */}}
{{- define "qscale.redis.enabled" -}}
{{- if or (eq .Values.broker.type "redis") (and (eq .Values.broker.type "rabbitmq") .Values.results.enabled) -}}
true
{{- end -}}
{{- end }}

{{- define "qscale.redis.fullname" -}}
{{- include "qscale.componentName" (dict "root" . "component" "redis") }}
{{- end }}

{{- define "qscale.rabbitmq.fullname" -}}
{{- include "qscale.componentName" (dict "root" . "component" "rabbitmq") }}
{{- end }}

{{- define "qscale.redis.secretName" -}}
{{- .Values.redis.auth.existingSecret | default (include "qscale.redis.fullname" .) }}
{{- end }}

{{- define "qscale.rabbitmq.secretName" -}}
{{- .Values.rabbitmq.auth.existingSecret | default (include "qscale.rabbitmq.fullname" .) }}
{{- end }}

{{/* The Secret and key holding the broker URL workers, controller and tests use. */}}
{{- define "qscale.broker.secretName" -}}
{{- if eq .Values.broker.type "redis" }}{{ include "qscale.redis.secretName" . }}
{{- else if eq .Values.broker.type "rabbitmq" }}{{ include "qscale.rabbitmq.secretName" . }}
{{- else }}{{ required "broker.external.existingSecret is required when broker.type=external" .Values.broker.external.existingSecret }}
{{- end }}
{{- end }}

{{- define "qscale.broker.urlKey" -}}
{{- if eq .Values.broker.type "redis" }}{{ .Values.redis.auth.urlKey }}
{{- else if eq .Values.broker.type "rabbitmq" }}{{ .Values.rabbitmq.auth.urlKey }}
{{- else }}{{ .Values.broker.external.urlKey }}
{{- end }}
{{- end }}

{{/*
Env vars every broker client (worker, test pod) gets: QSCALE_BROKER_URL and, when a
separate results store exists, QSCALE_RESULT_URL. Values are read from Secrets only.
*/}}
{{- define "qscale.brokerEnv" -}}
- name: QSCALE_BROKER_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "qscale.broker.secretName" . }}
      key: {{ include "qscale.broker.urlKey" . }}
{{- if and (eq .Values.broker.type "rabbitmq") .Values.results.enabled }}
- name: QSCALE_RESULT_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "qscale.redis.secretName" . }}
      key: {{ .Values.redis.auth.urlKey }}
{{- else if and (eq .Values.broker.type "external") .Values.broker.external.resultUrlKey }}
- name: QSCALE_RESULT_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.broker.external.existingSecret }}
      key: {{ .Values.broker.external.resultUrlKey }}
{{- end }}
{{- end }}

{{/* Pods carrying this label may reach the broker (see networkpolicy.yaml). */}}
{{- define "qscale.brokerClientLabel" -}}
qscale.io/broker-client: "true"
{{- end }}

{{/* ---- security ---- */}}

{{/* Pod securityContext: global defaults merged under a component's overrides. */}}
{{- define "qscale.podSecurityContext" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.podSecurityContext) (.override | default dict)) }}
{{- end }}

{{- define "qscale.containerSecurityContext" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.containerSecurityContext) (.override | default dict)) }}
{{- end }}

{{/* ---- workers ---- */}}

{{/* A pool merged over the worker defaults: {{ $pool := include "qscale.pool" (dict "root" $ "pool" .) | fromYaml }} */}}
{{- define "qscale.pool" -}}
{{- $defaults := deepCopy .root.Values.worker -}}
{{- toYaml (mergeOverwrite $defaults (deepCopy .pool)) }}
{{- end }}

{{- define "qscale.worker.fullname" -}}
{{- include "qscale.componentName" (dict "root" .root "component" (printf "worker-%s" .pool.name)) }}
{{- end }}

{{- define "qscale.worker.selectorLabels" -}}
{{ include "qscale.componentSelectorLabels" (dict "root" .root "component" "worker") }}
qscale.io/pool: {{ .pool.name }}
{{- end }}

{{/* Pod grace period: the worker's drain deadline plus a margin, never less. */}}
{{- define "qscale.worker.gracePeriod" -}}
{{- add (int (ceil .drainSeconds)) (int .terminationGraceMarginSeconds) }}
{{- end }}

{{/* A pool's ServiceAccount name ("" = none set: the namespace's default). */}}
{{- define "qscale.worker.serviceAccountName" -}}
{{- $sa := .pool.serviceAccount }}
{{- if $sa.create }}
{{- $sa.name | default (include "qscale.componentName" (dict "root" .root "component" "worker")) }}
{{- else }}
{{- $sa.name }}
{{- end }}
{{- end }}

{{- define "qscale.controller.name" -}}
{{- .Values.controller.name | default (include "qscale.controller.fullname" .) }}
{{- end }}

{{- define "qscale.controller.fullname" -}}
{{- include "qscale.componentName" (dict "root" . "component" "controller") }}
{{- end }}

{{- define "qscale.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- .Values.controller.serviceAccount.name | default (include "qscale.controller.fullname" .) }}
{{- else }}
{{- .Values.controller.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{- define "qscale.prometheus.fullname" -}}
{{- include "qscale.componentName" (dict "root" . "component" "prometheus") }}
{{- end }}

{{/* Scheme-aware redis URL for a host inside the release: redis://:PASSWORD@HOST:6379/DB */}}
{{- define "qscale.redis.url" -}}
{{- printf "redis://:%s@%s.%s.svc:%d/%d" .password (include "qscale.redis.fullname" .root) .root.Release.Namespace (int .root.Values.redis.service.port) (int .db) }}
{{- end }}

{{/* ---- RabbitMQ (the official image's contract; see rabbitmq-statefulset.yaml) ---- */}}

{{/* RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS, the password from the Secret. */}}
{{- define "qscale.rabbitmq.authEnv" -}}
- name: RABBITMQ_DEFAULT_USER
  value: {{ .Values.rabbitmq.auth.username | quote }}
- name: RABBITMQ_DEFAULT_PASS
  valueFrom:
    secretKeyRef:
      name: {{ include "qscale.rabbitmq.secretName" . }}
      key: {{ .Values.rabbitmq.auth.passwordKey }}
{{- end }}

{{/* /etc/rabbitmq/conf.d/10-qscale.conf: the whole configuration (it replaces the image's conf.d). */}}
{{- define "qscale.rabbitmq.config" -}}
# Rendered by the qscale chart; replaces the image's /etc/rabbitmq/conf.d.
listeners.tcp.default = 5672
# The management API serves the in-flight (unacked) counts the controller reads.
management.tcp.port = 15672
prometheus.tcp.port = 15692
log.console = true
log.console.level = info
log.file = false
# Written from the Secret by the sync-credentials init container, imported at every boot.
load_definitions = /etc/rabbitmq/definitions/definitions.json
vm_memory_high_watermark.relative = {{ .Values.rabbitmq.memoryHighWatermark }}
# A delivery unacknowledged this long closes its channel: keep it above the longest task.
consumer_timeout = {{ .Values.rabbitmq.consumerTimeoutMs | int64 }}
{{- with (dig "limits" "memory" "" .Values.rabbitmq.resources) }}
# The container's memory limit (RabbitMQ would otherwise see the node's memory).
total_memory_available_override_value = {{ include "qscale.bytes" . }}
{{- end }}
{{- with .Values.rabbitmq.extraConfiguration }}
{{ . }}
{{- end }}
{{- end }}

{{/* A Kubernetes quantity ("512Mi", "1G", "1073741824") in bytes. */}}
{{- define "qscale.bytes" -}}
{{- $text := toString . }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $text }}
{{- $suffix := trimPrefix $number $text }}
{{- $factors := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 }}
{{- if or (not $number) (not (hasKey $factors $suffix)) }}
{{- fail (printf "cannot read %q as a memory quantity (use e.g. 512Mi, 1Gi, 1G or bytes)" $text) }}
{{- end }}
{{- mulf (float64 $number) (index $factors $suffix) | int64 }}
{{- end }}
