{{/*
The WorkerPool CRD: which release manages it, and whether the one in the cluster is older.

files/crds/workerpool.yaml is the CRD itself (`kubectl apply -f` works on it as is). The
chart renders it as a template, not from crds/: Helm installs crds/ once and never
upgrades it, so a field a later chart adds would be pruned by the API server. One
release per cluster manages the CRD (Helm's ownership annotations); every other
release leaves it alone, so several releases can share a cluster.
*/}}

{{- define "qscale.crd.object" -}}
{{- .Files.Get "files/crds/workerpool.yaml" | fromYaml | toYaml }}
{{- end }}

{{/* The live CRD ({} when absent, or under `helm template`, which has no cluster). */}}
{{- define "qscale.crd.live" -}}
{{- $crd := include "qscale.crd.object" . | fromYaml }}
{{- lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" $crd.metadata.name | toYaml }}
{{- end }}

{{/* Fields of this chart's CRD that the live one lacks ("" when none, or none is live). */}}
{{- define "qscale.crd.missingFields" -}}
{{- $crd := include "qscale.crd.object" .root | fromYaml }}
{{- $missing := list }}
{{- if .live }}
{{- range $version := $crd.spec.versions }}
{{- $liveVersion := dict }}
{{- range $candidate := (dig "spec" "versions" list $.live) }}
{{- if eq $candidate.name $version.name }}{{ $liveVersion = $candidate }}{{ end }}
{{- end }}
{{- if not $liveVersion }}
{{- $missing = append $missing $version.name }}
{{- else }}
{{- range $part := list "spec" "status" }}
{{- $ours := dig "schema" "openAPIV3Schema" "properties" $part "properties" dict $version }}
{{- $theirs := dig "schema" "openAPIV3Schema" "properties" $part "properties" dict $liveVersion }}
{{- range $field := keys $ours | sortAlpha }}
{{- if not (hasKey $theirs $field) }}{{ $missing = append $missing (printf "%s.%s" $part $field) }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- join ", " $missing }}
{{- end }}

{{/*
Who manages the live CRD: "absent", "this-release", "release:<name>/<namespace>" or
"unmanaged" (chart 0.1.x's crds/, kubectl, k8s/).
*/}}
{{- define "qscale.crd.manager" -}}
{{- $annotations := dig "metadata" "annotations" dict .live }}
{{- $name := index $annotations "meta.helm.sh/release-name" | default "" }}
{{- $namespace := index $annotations "meta.helm.sh/release-namespace" | default "" }}
{{- if not .live }}absent
{{- else if and (eq $name .root.Release.Name) (eq $namespace .root.Release.Namespace) }}this-release
{{- else if $name }}release:{{ $name }}/{{ $namespace }}
{{- else }}unmanaged
{{- end }}
{{- end }}

{{/*
"true" when this release renders the CRD: crds.install, and the CRD is absent or this
release's. A CRD nobody manages (chart 0.1.x installed it from crds/) that lacks this
chart's fields is rendered on upgrade, so Helm refuses loudly (pass --take-ownership once)
instead of the API server pruning the new fields in silence.
*/}}
{{- define "qscale.crd.render" -}}
{{- if .Values.crds.install }}
{{- $live := include "qscale.crd.live" . | fromYaml }}
{{- $manager := include "qscale.crd.manager" (dict "root" . "live" $live) }}
{{- $missing := include "qscale.crd.missingFields" (dict "root" . "live" $live) }}
{{- if or (eq $manager "absent") (eq $manager "this-release") (and (eq $manager "unmanaged") $missing .Release.IsUpgrade) -}}
true
{{- end }}
{{- end }}
{{- end }}

{{/* True when the API server already serves WorkerPools (see workerpool.yaml). */}}
{{- define "qscale.crd.served" -}}
{{- if .Capabilities.APIVersions.Has "qscale.io/v1alpha1/WorkerPool" -}}
true
{{- end }}
{{- end }}
