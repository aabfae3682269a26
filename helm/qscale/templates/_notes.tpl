{{/* NOTES.txt (a helper, so tests can render it with `helm template`). */}}
{{- define "qscale.notes" -}}
qscale {{ .Chart.AppVersion }} is installed as release {{ .Release.Name }} in namespace {{ .Release.Namespace }}.
Broker: {{ .Values.broker.type }}{{ if eq .Values.broker.type "rabbitmq" }} (results store: {{ ternary "a Redis in this release" "disabled" .Values.results.enabled }}){{ end }}
{{- $pool := index .Values.pools 0 }}
{{- $worker := include "qscale.worker.fullname" (dict "root" $ "pool" $pool) }}
{{- $image := include "qscale.image" (dict "image" .Values.image "root" $) }}
{{- $registry := .Values.image.registry | default (dig "imageRegistry" "" (.Values.global | default dict)) }}

Images. The qscale image ({{ $image }}) runs the workers, the controller and `helm test`.
{{- if and (eq .Values.image.repository "qscale") (not $registry) }}

  WARNING: {{ $image }} is the chart's default image, published in no registry. Unless
  you loaded it into this cluster's nodes, every worker and controller pod stays in
  ErrImagePull / ImagePullBackOff. Build it from the qscale repository
  (`hack/build-image.sh qscale`), then either
    kind:           kind load docker-image {{ $image }}
    any cluster:    docker tag {{ $image }} REGISTRY/qscale:{{ .Chart.AppVersion }} && docker push REGISTRY/qscale:{{ .Chart.AppVersion }}
                    helm upgrade {{ .Release.Name }} <chart> -n {{ .Release.Namespace }} --reuse-values --set image.registry=REGISTRY
{{- end }}
{{- $brokerImages := list }}
{{- if and (include "qscale.redis.enabled" .) (eq .Values.redis.image.repository "qscale-redis") (not (.Values.redis.image.registry | default (dig "imageRegistry" "" (.Values.global | default dict)))) }}
{{- $brokerImages = append $brokerImages "--set redis.image.repository=redis --set redis.image.tag=7.4" }}
{{- end }}
{{- if and (eq .Values.broker.type "rabbitmq") (eq .Values.rabbitmq.image.repository "qscale-rabbitmq") (not (.Values.rabbitmq.image.registry | default (dig "imageRegistry" "" (.Values.global | default dict)))) }}
{{- $brokerImages = append $brokerImages "--set rabbitmq.image.repository=rabbitmq --set rabbitmq.image.tag=3.13-management" }}
{{- end }}
{{- if and .Values.monitoring.prometheus.enabled (eq .Values.monitoring.prometheus.image.repository "qscale-prometheus") (not (.Values.monitoring.prometheus.image.registry | default (dig "imageRegistry" "" (.Values.global | default dict)))) }}
{{- $brokerImages = append $brokerImages "--set monitoring.prometheus.image.repository=prom/prometheus --set monitoring.prometheus.image.tag=v2.55.1" }}
{{- end }}
{{- if $brokerImages }}

  The broker and monitoring images are the locally built qscale-* ones, published in no
  registry either (hack/build-image.sh builds them; `kind load` them). With access to
  Docker Hub, the official images speak the same contract; switch with:
  {{- range $brokerImages }}
    {{ . }}
  {{- end }}
{{- end }}
{{- /* The CRD is cluster-scoped: only a release that manages CRDs looks it up, so a
namespace-scoped deployer (crds.install=false) is not refused by the lookup. */}}
{{- $crdLive := dict }}
{{- if .Values.crds.install }}{{ $crdLive = include "qscale.crd.live" . | fromYaml }}{{ end }}
{{- $crdManager := include "qscale.crd.manager" (dict "root" . "live" $crdLive) }}
{{- $crdMissing := include "qscale.crd.missingFields" (dict "root" . "live" $crdLive) }}
{{- if and .Values.controller.enabled (not (include "qscale.crd.render" .)) }}

WorkerPool CRD: {{ if not .Values.crds.install }}crds.install=false, this release leaves it to you.
{{- else if hasPrefix "release:" $crdManager }}managed by release {{ trimPrefix "release:" $crdManager }}; this release leaves it alone.
{{- else }}installed without Helm (kubectl, or chart 0.1.x's crds/); this release leaves it alone.
{{- end }}
{{- if $crdMissing }}
  WARNING: it lacks fields of this chart ({{ $crdMissing }}), which the API server
  drops. Update it: `kubectl apply --server-side -f files/crds/workerpool.yaml` of this
  chart, or let this release manage it:
    helm upgrade {{ .Release.Name }} <chart> -n {{ .Release.Namespace }} --reuse-values --take-ownership
{{- end }}
{{- end }}

1. Check the round trip (enqueue a task, wait for its result):

   helm test {{ .Release.Name }} -n {{ .Release.Namespace }}

2. Enqueue a burst of demo tasks from inside a worker pod (it already has the
   broker credentials). 200 tasks of 5 s each on queue {{ index $pool.queues 0 | quote }}:

   kubectl -n {{ .Release.Namespace }} exec deploy/{{ $worker }} -- \
     python -m worker enqueue qscale.demo.sleep --args '[5]' --count 200 --queue {{ index $pool.queues 0 }}

   Queue depth, in-flight, delayed and dead-lettered at any time:

   kubectl -n {{ .Release.Namespace }} exec deploy/{{ $worker }} -- python -m worker status
{{- if .Values.controller.enabled }}

3. Watch the pool scale up, then back down after the burst:

   kubectl -n {{ .Release.Namespace }} get workerpools -w
   kubectl -n {{ .Release.Namespace }} get deploy {{ $worker }} -w
   kubectl -n {{ .Release.Namespace }} get events --field-selector reason=ScaledUp
{{- else }}

3. The controller is disabled: scale by hand with
   kubectl -n {{ .Release.Namespace }} scale deploy/{{ $worker }} --replicas=3
{{- end }}
{{- if .Values.monitoring.prometheus.enabled }}

4. Metrics (queue depth, in-flight, replicas, throughput, latency):

   kubectl -n {{ .Release.Namespace }} port-forward svc/{{ include "qscale.prometheus.fullname" . }} {{ .Values.monitoring.prometheus.service.port }}
   then open http://127.0.0.1:{{ .Values.monitoring.prometheus.service.port }} and try
     qscale_controller_queue_ready   qscale_controller_current_replicas
     sum(rate(qscale_tasks_total[1m])) by (status)
{{- end }}
{{- if .Values.monitoring.grafanaDashboard.enabled }}

   Grafana: the dashboard ships in ConfigMap {{ include "qscale.componentName" (dict "root" $ "component" "dashboard") }} (label grafana_dashboard=1).
{{- end }}

{{- if .Values.networkPolicy.enabled }}
{{- $podMonitors := and .Values.monitoring.serviceMonitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}
{{- $brokerPods := or (include "qscale.redis.enabled" .) (eq .Values.broker.type "rabbitmq") }}

Network policies (enforced only by a network plugin that implements them):
{{- if $brokerPods }}
  the broker admits this release's pods labelled qscale.io/broker-client=true
  {{- with .Values.networkPolicy.brokerFrom }} and {{ len . }} peer(s) of networkPolicy.brokerFrom{{ end }}.
{{- if not .Values.networkPolicy.brokerFrom }}
  Producers: label their pods app.kubernetes.io/instance={{ .Release.Name }} and
  qscale.io/broker-client=true, or admit them (other namespaces) with networkPolicy.brokerFrom.
{{- end }}
{{- end }}
  {{ if .Values.controller.enabled }}Workers and the controller admit this release's controller and Prometheus{{ else }}Workers admit this release's Prometheus{{ end }}
  {{- with .Values.networkPolicy.metricsFrom }} and {{ len . }} peer(s) of networkPolicy.metricsFrom{{ end }}.
{{- if and $podMonitors (not .Values.networkPolicy.metricsFrom) }}
  WARNING: the PodMonitors' Prometheus is not admitted to the workers (8080) and the
  controller (8081): add its namespace to networkPolicy.metricsFrom.
{{- end }}
{{- end }}

Your own tasks: build an image FROM {{ $image }} that installs your
package, then set image.repository/tag and worker.imports (see the chart README).
{{- if or (include "qscale.redis.enabled" .) (eq .Values.broker.type "rabbitmq") }}

Uninstall keeps the broker's PersistentVolumeClaim and its credentials Secret (so a
reinstall finds its data and its password); remove both with
  kubectl -n {{ .Release.Namespace }} delete pvc,secret -l app.kubernetes.io/instance={{ .Release.Name }}
{{- end }}
{{- end }}
