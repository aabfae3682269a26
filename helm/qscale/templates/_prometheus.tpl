{{/* prometheus.yml of the built-in Prometheus (prometheus.yaml). */}}
{{- define "qscale.prometheus.config" -}}
{{- $p := .Values.monitoring.prometheus }}
{{- $k8sSD := eq $p.discovery "kubernetes" -}}
global:
  scrape_interval: {{ $p.scrapeInterval }}
  evaluation_interval: 15s
rule_files:
  - /etc/prometheus/alerts.yml
scrape_configs:
  {{- if $k8sSD }}
  # Every pod of this release annotated prometheus.io/scrape=true: workers (8080),
  # the controller (8081) and RabbitMQ's prometheus plugin (15692).
  - job_name: qscale-pods
    kubernetes_sd_configs:
      - role: pod
        namespaces:
          names: [{{ .Release.Namespace | quote }}]
        selectors:
          - role: pod
            label: {{ printf "app.kubernetes.io/instance=%s" .Release.Name | quote }}
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
        regex: "true"
        action: keep
      - source_labels: [__meta_kubernetes_pod_phase]
        regex: Running
        action: keep
      - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
        regex: (.+);(\d+)
        replacement: $1:$2
        target_label: __address__
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
        regex: (.+)
        target_label: __metrics_path__
      - source_labels: [__meta_kubernetes_namespace]
        target_label: kubernetes_namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: kubernetes_pod_name
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_component]
        target_label: component
      - source_labels: [__meta_kubernetes_pod_label_qscale_io_pool]
        target_label: qscale_pool
  {{- else }}
  # DNS discovery through headless Services (one A record per pod, ready or not):
  # Debian's prometheus build has no kubernetes_sd, and this needs no API access.
  - job_name: qscale-workers
    dns_sd_configs:
      - names:
          {{- range $entry := .Values.pools }}
          - {{ printf "%s-scrape.%s.svc" (include "qscale.worker.fullname" (dict "root" $ "pool" $entry)) $.Release.Namespace }}
          {{- end }}
        type: A
        port: 8080
        refresh_interval: 10s
    relabel_configs:
      - source_labels: [__meta_dns_name]
        regex: {{ printf "%s-(.+)-scrape\\..*" (include "qscale.componentName" (dict "root" $ "component" "worker")) | quote }}
        target_label: qscale_pool
      - target_label: component
        replacement: worker
  {{- if .Values.controller.enabled }}
  - job_name: qscale-controller
    dns_sd_configs:
      - names: [{{ printf "%s-scrape.%s.svc" (include "qscale.controller.fullname" .) .Release.Namespace | quote }}]
        type: A
        port: 8081
        refresh_interval: 10s
    relabel_configs:
      - target_label: component
        replacement: controller
  {{- end }}
  {{- if eq .Values.broker.type "rabbitmq" }}
  - job_name: qscale-rabbitmq
    static_configs:
      - targets: [{{ printf "%s.%s.svc:15692" (include "qscale.rabbitmq.fullname" .) .Release.Namespace | quote }}]
        labels:
          component: rabbitmq
  {{- end }}
  {{- end }}
  # Redis has no exporter here; queue depth and in-flight come from the
  # controller's qscale_controller_* series.
{{- end }}
