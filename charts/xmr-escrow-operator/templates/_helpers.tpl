{{/* Names */}}
{{- define "xmr-escrow-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "xmr-escrow-operator.fullname" -}}
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

{{- define "xmr-escrow-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "xmr-escrow-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where Escrows and WalletPools are watched (empty: every namespace). */}}
{{- define "xmr-escrow-operator.watchNamespace" -}}
{{- .Values.watchNamespace | default "" }}
{{- end }}

{{- define "xmr-escrow-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Images WalletPools may run: the chart's own (the operator image for walletfs, the CRD's defaults,
walletPool's images) and operator.allowedImages. */}}
{{- define "xmr-escrow-operator.allowedImages" -}}
{{- $images := list (include "xmr-escrow-operator.image" .) "xmr-escrow/wallet-rpc:0.18.4.0" "xmr-escrow/wallet-rpc:0.18.0.0" "xmr-escrow/operator:0.1.0" -}}
{{- with .Values.walletPool.image }}{{ $images = append $images . }}{{ end -}}
{{- with .Values.walletPool.operatorImage }}{{ $images = append $images . }}{{ end -}}
{{- join "," (concat $images .Values.operator.allowedImages | uniq) -}}
{{- end }}

{{/* Labels. app.kubernetes.io/name is fixed: WalletPool NetworkPolicies admit exactly it. */}}
{{- define "xmr-escrow-operator.selectorLabels" -}}
app.kubernetes.io/name: xmr-escrow-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "xmr-escrow-operator.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: xmr-escrow
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "xmr-escrow-operator.labels" -}}
{{ include "xmr-escrow-operator.selectorLabels" . }}
{{ include "xmr-escrow-operator.commonLabels" . }}
{{- end }}

{{/*
RBAC, derived from the operator's code (operator/escrow_operator) and kopf 1.45; nothing else.
Every rule is exercised by tests/integration/test_chart.py (an audited run of the operator as this
ServiceAccount, and a drop-one-rule check of each verb).
*/}}
{{- define "xmr-escrow-operator.namespacedRules" -}}
# kopf lists and watches Escrows, EscrowPayouts and WalletPools, and patches them to keep its
# finalizer and its progress annotations (merge patch + JSON patch); a payout lists its escrow's
# other payouts (one in flight per escrow).
- apiGroups: ["xmrescrow.dev"]
  resources: ["escrows", "escrowpayouts", "walletpools"]
  verbs: ["list", "watch", "patch"]
# A payout reads the Escrow it pays out of.
- apiGroups: ["xmrescrow.dev"]
  resources: ["escrows"]
  verbs: ["get"]
# Kube.patch_status: Escrow rounds and phase, payout progress, WalletPool replicas/conditions (merge patch).
- apiGroups: ["xmrescrow.dev"]
  resources: ["escrows/status", "escrowpayouts/status", "walletpools/status"]
  verbs: ["patch"]
# Owner references with blockOwnerDeletion: the Escrow's Secret escrow-<uid> (owner Escrow), the
# payout's Secret payout-<uid> (owner EscrowPayout) and the pool's StatefulSet/Service/PDB/
# NetworkPolicy/Secret (owner WalletPool). Clusters running the OwnerReferencesPermissionEnforcement
# admission plugin (OpenShift and others) require this.
- apiGroups: ["xmrescrow.dev"]
  resources: ["escrows/finalizers", "escrowpayouts/finalizers", "walletpools/finalizers"]
  verbs: ["update"]
# kopf watches the pool pods (label xmrescrow.dev/pool) to schedule steps on ready ones; a pool pod
# started with the credentials of a replaced pool Secret is deleted, so its StatefulSet starts it anew.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "delete"]
# escrow-<uid> (passwords, round messages): read, create, record (merge patch with
# resourceVersion), release (walletRetention: Retain), delete (walletRetention: Delete);
# payout-<uid> (multisig infos, transaction sets): read, create, record;
# <pool>-rpc (RPC login, walletfs token): read, create;
# escrow-<uid>-recovery in the operator's namespace (recoveryRules): create, read, replace, delete.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch", "delete"]
# The pool's objects, by server-side apply (PATCH; creating an object by apply needs create too).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "patch"]
# The pool's wallet claim is created once (an existing one answers 409) and never changed; a pool
# naming an existing claim (storage.claimName) has it read to check it is labelled for that pool.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create"]
# kopf.event (one per round, retention, failures) posts core/v1 Events.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{- define "xmr-escrow-operator.recoveryRules" -}}
# escrow-<uid>-recovery (the wallet passwords of every escrow), escrow-<uid>-watch (what the chain
# watch found for it) and escrow-chain-<digest> (each chain's cursor), kept in the operator's namespace
# where no user of an escrow's namespace can write.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}

{{- define "xmr-escrow-operator.crdRules" -}}
# kopf watches CRDs to notice new or changed versions of its resources without a restart.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}

{{- define "xmr-escrow-operator.namespaceRules" -}}
# kopf with a namespace list (watchNamespace) lists and watches namespaces to follow them.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}

{{/* The namespace of walletPool.name (created by the chart or existing): walletPool.namespace, else
watchNamespace, else the release namespace (as templates/walletpool.yaml). */}}
{{- define "xmr-escrow-operator.poolNamespace" -}}
{{- .Values.walletPool.namespace | default (include "xmr-escrow-operator.watchNamespace" .) | default .Release.Namespace }}
{{- end }}
