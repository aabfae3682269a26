{{/*
The controller's Role rules. Keep equal to controller/rbac.yaml (the controller's
canonical list; tests/chart/test_rbac.py compares them), except that the Secret
rule is narrowed to the broker Secret with resourceNames.
*/}}
{{- define "qscale.controller.rbacRules" -}}
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create", "get", "update"]
- apiGroups: ["qscale.io"]
  resources: ["workerpools"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["qscale.io"]
  resources: ["workerpools/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: [{{ include "qscale.broker.secretName" . | quote }}]
  verbs: ["get"]
{{- end }}
