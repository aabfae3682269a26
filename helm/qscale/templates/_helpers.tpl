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

{{/* image: {{ include "qscale.image" (dict "image" .Values.image "root" $) }}; tag defaults to appVersion. */}}
{{- define "qscale.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
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
{{- include "qscale.componentName" (dict "root" . "component" "control-token") }}
{{- end }}

{{/* QSCALE_CONTROL_TOKEN from the chart's Secret (workers of autoscaled pools, controller). */}}
{{- define "qscale.cordon.env" -}}
- name: QSCALE_CONTROL_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "qscale.cordon.secretName" . }}
      key: token
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
