{{/*
qscale's alert rules (a Prometheus rule group), shared by the PrometheusRule for
prometheus-operator and the built-in Prometheus server. Metric names come from
worker/metrics.py (qscale_*) and controller/metrics.py (qscale_controller_*).
*/}}
{{- define "qscale.alertRules" -}}
{{- $r := .Values.monitoring.prometheusRule -}}
- name: qscale
  rules:
    - alert: QscaleQueueBacklogGrowing
      expr: deriv(qscale_controller_queue_ready[10m]) > 0 and qscale_controller_queue_ready > {{ $r.queueDepth }}
      for: {{ $r.for }}
      labels:
        severity: warning
      annotations:
        summary: Queue backlog of pool {{ "{{ $labels.pool }}" }} keeps growing
        description: {{ printf "Ready depth is above %v and still rising: the pool may be at maxReplicas or its workers stuck." $r.queueDepth | quote }}
    - alert: QscaleQueueWaitHigh
      expr: histogram_quantile(0.95, sum by (le, task) (rate(qscale_task_queue_wait_seconds_bucket[5m]))) > {{ $r.queueWaitSeconds }}
      for: {{ $r.for }}
      labels:
        severity: warning
      annotations:
        summary: Tasks {{ "{{ $labels.task }}" }} wait too long in the queue
        description: {{ printf "p95 queue wait is above %vs." $r.queueWaitSeconds | quote }}
    - alert: QscaleDeadLettersGrowing
      expr: sum by (reason) (increase(qscale_dead_lettered_total[10m])) > 0
      for: 5m
      labels:
        severity: warning
      annotations:
        summary: Messages are being dead-lettered ({{ "{{ $labels.reason }}" }})
        description: Inspect them with `python -m worker dlq`; requeue after fixing the cause.
    - alert: QscaleControllerErrors
      expr: sum by (pool) (rate(qscale_controller_metric_read_errors_total[5m])) > 0 or sum by (pool) (rate(qscale_controller_api_errors_total[5m])) > 0
      for: 5m
      labels:
        severity: warning
      annotations:
        summary: The qscale controller fails to read metrics or to act for pool {{ "{{ $labels.pool }}" }}
        description: Replicas are held while this lasts; see the controller's logs and the WorkerPool's conditions.
    {{- /* Without a controller there is no leader to miss: the alert would fire for ever. */}}
    {{- if .Values.controller.enabled }}
    - alert: QscaleControllerNoLeader
      expr: absent(qscale_controller_is_leader == 1)
      for: 2m
      labels:
        severity: critical
      annotations:
        summary: No qscale controller replica holds the lease
        description: Nothing scales the worker pools. Check the controller pods and their Lease.
    {{- end }}
{{- end }}
