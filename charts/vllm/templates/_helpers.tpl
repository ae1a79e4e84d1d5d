{{/* Chart name. */}}
{{- define "vllm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the operator's objects. */}}
{{- define "vllm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "vllm.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "vllm.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "vllm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels every object of the release carries, beside its name and instance. */}}
{{- define "vllm.commonLabels" -}}
helm.sh/chart: {{ include "vllm.chart" . }}
app.kubernetes.io/part-of: {{ include "vllm.name" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the release's objects other than the operator's (CRs, hooks, test pods, the
     dashboard). */}}
{{- define "vllm.labels" -}}
app.kubernetes.io/name: {{ include "vllm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "vllm.commonLabels" . }}
{{- end }}

{{/* The operator's selector labels: a fixed subset of its labels. The operator's pods are
     also what VLLMDeployments' NetworkPolicies let in (app.kubernetes.io/name). */}}
{{- define "vllm.operatorSelectorLabels" -}}
app.kubernetes.io/name: vllm-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vllm.operatorLabels" -}}
{{ include "vllm.operatorSelectorLabels" . }}
{{ include "vllm.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "vllm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vllm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference, with global.imageRegistry (a mirror) in place of the registry it
     names, if set: the first part of "registry/path:tag" when it has a "." or ":" or is
     localhost; Docker Hub's names ("curlimages/curl:8") get the mirror in front.
     Call with (dict "root" $ "image" "ghcr.io/org/name:tag"). */}}
{{- define "vllm.image" -}}
{{- $registry := (.root.Values.global | default dict).imageRegistry | default "" | trimSuffix "/" }}
{{- if $registry }}
{{- $parts := splitList "/" .image }}
{{- $first := first $parts }}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) }}
{{- printf "%s/%s" $registry (join "/" (rest $parts)) }}
{{- else }}
{{- printf "%s/%s" $registry .image }}
{{- end }}
{{- else }}
{{- .image }}
{{- end }}
{{- end }}

{{- define "vllm.operatorImage" -}}
{{- $image := printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- include "vllm.image" (dict "root" . "image" $image) }}
{{- end }}

{{/* imagePullSecrets of a pod: global.imagePullSecrets and the pod's own (names, or objects
     with a name), once each; nothing when there are none.
     Call with (dict "root" $ "secrets" .Values.operator.imagePullSecrets). */}}
{{- define "vllm.imagePullSecrets" -}}
{{- $names := list }}
{{- range concat ((.root.Values.global | default dict).imagePullSecrets | default list) (.secrets | default list) }}
{{- if kindIs "string" . }}
{{- $names = append $names . }}
{{- else }}
{{- $names = append $names .name }}
{{- end }}
{{- end }}
{{- with uniq $names }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* The operator's rules on namespaced resources: the ClusterRole's (every namespace) and each
     Role's (operator.watchNamespaces). Each rule is what the operator was seen sending in its
     tests (tests/golden/operator-api-calls.json, checked by tests/chart/test_chart.py), plus
     what a comment justifies. No rule on Secrets: the operator reads none (a missing one shows
     in the pods' status, which the kubelet writes). Every kind it makes, and the sets and pods
     between its workloads and their servers, it lists and watches (by its managed-by label): it
     reads them from what the watches hold, so that a cluster at rest costs no request. */}}
{{- define "vllm.namespacedRules" -}}
# Its own resources, read from its watch streams (never fetched alone); status is written
# through the subresource.
- apiGroups: [serving.vllm.ai]
  resources: [vllmdeployments, loraadapters]
  verbs: [list, watch, patch]
- apiGroups: [serving.vllm.ai]
  resources: [vllmdeployments/status, loraadapters/status]
  verbs: [patch]
# Children carry ownerReferences with blockOwnerDeletion, which clusters enforcing
# OwnerReferencesPermissionEnforcement (OpenShift, hardened clusters) allow only to whoever
# may update the owner's finalizers.
- apiGroups: [serving.vllm.ai]
  resources: [vllmdeployments/finalizers]
  verbs: [update]
# Children, written with server-side apply: a PATCH that creates an object is also
# authorized as create. Delete prunes children a spec no longer wants (a Deployment when
# spec.parallelism.nodes goes above 1, a LeaderWorkerSet when it comes back to 1).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# Multi-node replicas (spec.parallelism.nodes above 1), where LeaderWorkerSet is installed.
- apiGroups: [leaderworkerset.x-k8s.io]
  resources: [leaderworkersets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors, podmonitors]
  verbs: [get, list, watch, create, patch, delete]
# spec.autoscaling: KEDA's ScaledObject where its CRDs are installed, else an HPA.
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, list, watch, create, patch, delete]
# ... and to zero, KEDA's HTTP add-on's InterceptorRoute, which holds requests meanwhile.
- apiGroups: [http.keda.sh]
  resources: [interceptorroutes]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
# Gateway API Inference Extension pools (spec.inferencePool), where the CRD is installed.
- apiGroups: [inference.networking.k8s.io]
  resources: [inferencepools]
  verbs: [get, list, watch, create, patch, delete]
# Pods of its Deployments and LeaderWorkerSets, found through their owner chains
# (Deployment -> ReplicaSet -> Pod; LeaderWorkerSet -> StatefulSet -> leader Pod ->
# StatefulSet -> worker Pod): to report those the kubelet cannot start, reach their servers
# and set the adapters-loaded readiness gate.
- apiGroups: [apps]
  resources: [replicasets, statefulsets]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* A pod's securityContext: `context` as given, less runAsUser, runAsGroup and fsGroup when the
     platform assigns UIDs (OpenShift's restricted-v2 SCC refuses fixed ones outside the
     namespace's range): compatibility.openshift.adaptSecurityContext "force", or "auto" on a
     cluster that serves security.openshift.io/v1.
     Call with (dict "root" $ "context" (dict ...)). */}}
{{- define "vllm.podSecurityContext" -}}
{{- $context := deepCopy .context }}
{{- if include "vllm.platformAssignsUIDs" .root }}
{{- $context = omit $context "runAsUser" "runAsGroup" "fsGroup" }}
{{- end }}
{{- toYaml $context }}
{{- end }}

{{/* "true" where the platform assigns pods their UIDs (see vllm.podSecurityContext), else
     nothing. The operator is told too, for the model pods it makes. */}}
{{- define "vllm.platformAssignsUIDs" -}}
{{- $mode := .Values.compatibility.openshift.adaptSecurityContext }}
{{- if or (eq $mode "force") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "security.openshift.io/v1")) }}
{{- "true" }}
{{- end }}
{{- end }}

{{/* The securityContext of the chart's own hook and test pods: non-root, RuntimeDefault. */}}
{{- define "vllm.hookPodSecurityContext" -}}
{{- include "vllm.podSecurityContext" (dict "root" . "context" (dict "runAsNonRoot" true "runAsUser" 65532 "runAsGroup" 65532 "seccompProfile" (dict "type" "RuntimeDefault"))) }}
{{- end }}
