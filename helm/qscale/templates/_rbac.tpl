{{/*
The controller's Role rules. Keep equal to controller/rbac.yaml (the controller's
canonical list, derived from its API calls; tests/chart/test_rbac.py compares them),
except that the Secret and Lease rules name this release's objects.
*/}}
{{- define "qscale.controller.rbacRules" -}}
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "qscale.controller.fullname" . | quote }}]
  verbs: ["get", "update"]
- apiGroups: ["qscale.io"]
  resources: ["workerpools"]
  verbs: ["list", "watch"]
- apiGroups: ["qscale.io"]
  resources: ["workerpools/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: [{{ include "qscale.broker.secretName" . | quote }}]
  verbs: ["get"]
{{- end }}
