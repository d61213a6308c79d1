"""The EKS cluster every pattern shares, and the pieces node groups are made of.

The control plane is created the same way under every pattern (without the
self-managed add-ons, which EKS can only decide at creation time), so changing
a stack's pattern never replaces the cluster: the pattern chooses the CNI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from .instance_types import ami_type
from .network import Network
from .plan import Plan
from .settings.aws_rules import ec2_service_principal, eks_access_policy_arn, managed_policy_arn
from .versions import KUBERNETES_MINORS

CONTROL_PLANE_LOGS = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
# ARNs carry the region's partition (arn:aws-us-gov:..., arn:aws-cn:...).
ADMIN_POLICY = "AmazonEKSClusterAdminPolicy"
NODE_POLICIES = {"worker": "AmazonEKSWorkerNodePolicy", "ecr": "AmazonEC2ContainerRegistryPullOnly"}
SYSTEM_LABEL = {"egress/role": "system"}
PLATFORM_POLICY = "platform-allow-all"  # NetworkPolicy of the add-ons' namespaces under a strict CNI


class NodeGroupScaling(Protocol):
    """What a node group is sized by: a tenant's or the system's NodeGroupSize, or
    a pattern's fixed size (cilium: one gateway node per AZ)."""

    instance_type: str
    min: int
    max: int


@dataclass(frozen=True)
class NodeRole:
    role: aws.iam.Role
    policies: list[pulumi.Resource]  # node groups wait for these: nodes join only with them


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str = "NO_SCHEDULE"  # EKS API spelling; Kubernetes: NoSchedule

    def args(self) -> aws.eks.NodeGroupTaintArgs:
        return aws.eks.NodeGroupTaintArgs(key=self.key, value=self.value, effect=self.effect)


class Cluster(pulumi.ComponentResource):
    """Private EKS control plane with envelope encryption, audit logs, access
    entries for the named admins, an OIDC provider, and the node IAM role."""

    name: pulumi.Output[str]
    provider: k8s.Provider

    def __init__(self, name: str, plan: Plan, network: Network, opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:base:Cluster", name, None, opts)
        settings = plan.settings
        child = pulumi.ResourceOptions(parent=self)
        self.stack = plan.stack
        self.partition = settings.partition
        self.vpc_id = network.vpc_id
        self.kubernetes_version = settings.kubernetes_version
        self.pins = KUBERNETES_MINORS[settings.kubernetes_version]  # add-on versions of this minor

        self.secrets_key = aws.kms.Key(
            f"{name}-secrets",
            description=f"EKS secrets envelope encryption ({plan.stack})",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=child,
        )
        public_cidrs = [str(c) for c in settings.endpoint_public_access_cidrs]
        self.eks = eks.Cluster(
            name,
            vpc_id=network.vpc_id,
            private_subnet_ids=network.control_plane_subnet_ids,
            node_associate_public_ip_address=False,
            version=settings.kubernetes_version,
            endpoint_private_access=True,
            endpoint_public_access=bool(public_cidrs),
            public_access_cidrs=public_cidrs or None,
            authentication_mode=eks.AuthenticationMode.API,
            # Keyed by principal through the persisted assignment: the key names
            # the entry, so removing or reordering admins re-creates none.
            access_entries={
                key: eks.AccessEntryArgs(
                    principal_arn=arn,
                    access_policies={
                        "cluster-admin": eks.AccessPolicyAssociationArgs(
                            policy_arn=eks_access_policy_arn(self.partition, ADMIN_POLICY),
                            access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                        )
                    },
                )
                for arn, key in settings.assignment.admins.items()
            },
            encryption_config_key_arn=self.secrets_key.arn,
            enabled_cluster_log_types=CONTROL_PLANE_LOGS,
            create_oidc_provider=True,
            deletion_protection=settings.deletion_protection,
            # EKS decides these only at creation; keeping them fixed keeps the
            # cluster when the pattern (and so the CNI) changes.
            bootstrap_self_managed_addons=False,
            use_default_vpc_cni=True,  # pulumi-eks adds no CNI; the pattern's CNI component does
            kube_proxy_addon_options=eks.KubeProxyAddonOptionsArgs(enabled=False),
            coredns_addon_options=eks.CoreDnsAddonOptionsArgs(enabled=False),
            skip_default_node_group=True,
            skip_default_security_groups=True,  # nodes use the EKS-managed cluster security group
            tags={"egress/stack": plan.stack},
            opts=child,
        )
        self.eks_cluster = self.eks.eks_cluster
        self.name = self.eks_cluster.name
        self.endpoint = self.eks_cluster.endpoint
        self.security_group_id = self.eks_cluster.vpc_config.cluster_security_group_id
        # skipDefaultSecurityGroups leaves the control plane with only the EKS
        # cluster security group, which admits only itself (its members: nodes
        # and control-plane ENIs). Operators reach the private endpoint from
        # outside it, so HTTPS from their ranges is opened here (EKS user guide,
        # "Cluster API server endpoint": with public access off, the API is
        # reachable only from the VPC or a connected network, and "the cluster
        # security group" must allow 443 from there).
        self.api_access_rules = [
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-api-access-{index}",
                security_group_id=self.security_group_id,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                cidr_ipv4=str(cidr),
                description="Kubernetes API (pulumi up, kubectl) from an operator range",
                tags={"egress/stack": plan.stack},
                opts=child,
            )
            for index, cidr in enumerate(settings.api_access_ranges)
        ]
        self.oidc_provider_arn = self.eks.oidc_provider_arn
        self.oidc_issuer = self.eks.oidc_issuer
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.eks.kubeconfig_json,
            opts=child,
        )

        self.node_role = self.new_node_role(f"{name}-node", parent=self)
        self.launch_template = self.hardened_launch_template(f"{name}-nodes")
        self.register_outputs({"name": self.name, "endpoint": self.endpoint})

    def new_node_role(self, name: str, *, parent: pulumi.Resource) -> NodeRole:
        """An EC2 role for nodes with the worker and ECR pull policies only; the
        CNI has its own role. EKS creates the access entry of a managed node
        group's role itself."""
        role = aws.iam.Role(
            name,
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Principal": {"Service": ec2_service_principal(self.partition)},
                         "Action": "sts:AssumeRole"}
                    ],
                }
            ),
            description="EKS worker nodes; the CNI has its own role",
            opts=pulumi.ResourceOptions(parent=parent),
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-{key}", role=role.name, policy_arn=managed_policy_arn(self.partition, policy),
                opts=pulumi.ResourceOptions(parent=role),
            )
            for key, policy in NODE_POLICIES.items()
        ]
        return NodeRole(role, attachments)

    def hardened_launch_template(self, name: str, *, user_data: pulumi.Input[str] | None = None,
                                 parent: pulumi.Resource | None = None) -> aws.ec2.LaunchTemplate:
        """IMDSv2 only, hop limit 1 (pods cannot reach the node's credentials;
        AWS-calling pods use IRSA), encrypted root volume."""
        return aws.ec2.LaunchTemplate(
            name,
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=50, volume_type="gp3", encrypted="true", delete_on_termination="true"
                    ),
                )
            ],
            user_data=user_data,
            update_default_version=True,
            opts=pulumi.ResourceOptions(parent=parent or self),
        )

    def node_group(
        self,
        name: str,
        *,
        subnet_ids: list[pulumi.Input[str]],
        size: NodeGroupScaling,
        labels: dict[str, str],
        taints: list[Taint],
        cni: Cni,
        parent: pulumi.Resource,
        launch_template: aws.ec2.LaunchTemplate | None = None,
        role: NodeRole | None = None,
        auto_repair: bool = False,
        after: list[pulumi.Resource] | None = None,
    ) -> aws.eks.NodeGroup:
        """A managed node group in the given private subnets; it waits for the CNI
        and carries the CNI's start-up taints. `auto_repair`: EKS replaces
        unhealthy nodes (node_repair_config); `after`: node groups this one is
        created and updated after (one group at a time)."""
        template = launch_template or self.launch_template
        role = role or self.node_role
        return aws.eks.NodeGroup(
            name,
            cluster_name=self.name,
            node_role_arn=role.role.arn,
            subnet_ids=subnet_ids,
            instance_types=[size.instance_type],
            ami_type=ami_type(size.instance_type),  # Graviton types get the arm64 AMI
            capacity_type="ON_DEMAND",
            version=self.kubernetes_version,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=size.min, desired_size=size.min, max_size=size.max
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            node_repair_config=aws.eks.NodeGroupNodeRepairConfigArgs(enabled=True) if auto_repair else None,
            labels=labels,
            taints=[t.args() for t in [*taints, *cni.startup_taints]],
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            tags={"egress/stack": self.stack},
            opts=pulumi.ResourceOptions(
                parent=parent,
                # Nodes register only with their role's policies in place, and
                # become Ready only once the CNI is there.
                depends_on=[*role.policies, cni, *(after or [])],
                # EKS scales the group; Pulumi keeps only the bounds.
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )

    def addon(self, name: str, addon_name: str, version: str, *, parent: pulumi.Resource,
              configuration: dict | None = None, service_account_role_arn: pulumi.Input[str] | None = None,
              depends_on: list[pulumi.Resource] | None = None) -> aws.eks.Addon:
        """An EKS managed add-on pinned to `version` (from the cluster minor's row of
        patterns/versions.py), so a change of egress:kubernetesVersion upgrades it
        right after the control plane (the add-on reads the cluster's name)."""
        return aws.eks.Addon(
            name,
            cluster_name=self.name,
            addon_name=addon_name,
            addon_version=version,
            configuration_values=json.dumps(configuration) if configuration else None,
            service_account_role_arn=service_account_role_arn,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on),
        )

    def irsa_role(self, name: str, namespace: str, service_account: str, policy_arns: list[pulumi.Input[str]],
                  parent: pulumi.Resource) -> aws.iam.Role:
        """A role only the named service account of this cluster can assume."""
        issuer = self.oidc_issuer
        role = aws.iam.Role(
            name,
            assume_role_policy=pulumi.Output.all(self.oidc_provider_arn, issuer).apply(
                lambda args: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Federated": args[0]},
                                "Action": "sts:AssumeRoleWithWebIdentity",
                                "Condition": {
                                    "StringEquals": {
                                        f"{args[1]}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                                        f"{args[1]}:aud": "sts.amazonaws.com",
                                    }
                                },
                            }
                        ],
                    }
                )
            ),
            opts=pulumi.ResourceOptions(parent=parent),
        )
        for index, arn in enumerate(policy_arns):
            aws.iam.RolePolicyAttachment(
                f"{name}-{index}", role=role.name, policy_arn=arn, opts=pulumi.ResourceOptions(parent=role)
            )
        return role


class Cni(pulumi.ComponentResource):
    """The cluster's pod network. Node groups wait for it and carry its start-up taints."""

    startup_taints: list[Taint] = []

    def open_platform_namespace(self, name: str, namespace: pulumi.Input[str],
                                parent: pulumi.Resource) -> list[pulumi.Resource]:
        """What a namespace of cluster add-ons needs so its pods can talk at all;
        its workloads wait for the returned resources. Nothing, unless the CNI
        denies pods that no NetworkPolicy selects."""
        return []


class VpcCni(Cni):
    """The Amazon VPC CNI and kube-proxy as EKS managed add-ons, the CNI with its
    own IRSA role, and network policy enforcement on."""

    def __init__(self, name: str, cluster: Cluster, *, external_snat: bool = False,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:base:VpcCni", name, None, opts)
        role = cluster.irsa_role(
            f"{name}-vpc-cni", "kube-system", "aws-node",
            [managed_policy_arn(cluster.partition, "AmazonEKS_CNI_Policy")], parent=self,
        )
        self.configuration = {
            "enableNetworkPolicy": "true",
            "env": {
                "AWS_VPC_K8S_CNI_EXTERNALSNAT": "true" if external_snat else "false",
                # A new pod starts with default-deny until its NetworkPolicies are
                # in place (standard mode: default-allow until then); a pod that no
                # policy selects stays denied (amazon-vpc-cni-k8s README,
                # NETWORK_POLICY_ENFORCING_MODE, v1.17.1+), hence open_platform_namespace.
                "NETWORK_POLICY_ENFORCING_MODE": "strict",
                # Secondary ENIs only in the node's own subnet: a stray
                # kubernetes.io/role/cni tag on another subnet would otherwise give
                # a tenant's pods addresses (and a source identity) from there
                # (README, ENABLE_SUBNET_DISCOVERY, v1.18.0+, default true).
                "ENABLE_SUBNET_DISCOVERY": "false",
            },
        }
        self.vpc_cni = cluster.addon(
            f"{name}-vpc-cni", "vpc-cni", cluster.pins.vpc_cni, parent=self,
            configuration=self.configuration, service_account_role_arn=role.arn,
        )
        self.kube_proxy = cluster.addon(f"{name}-kube-proxy", "kube-proxy", cluster.pins.kube_proxy, parent=self)
        # CoreDNS and the add-ons in kube-system; node groups wait for this component.
        self.kube_system_policies = self.open_platform_namespace(f"{name}-kube-system", "kube-system", self)
        self.register_outputs({"vpc_cni_role_arn": role.arn})

    def open_platform_namespace(self, name: str, namespace: pulumi.Input[str],
                                parent: pulumi.Resource) -> list[pulumi.Resource]:
        """Strict mode leaves a pod that no NetworkPolicy selects without any
        traffic: the add-ons' namespaces get an explicit allow-all, what standard
        mode gave them. Tenant and gateway namespaces keep their default-deny."""
        return [
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{PLATFORM_POLICY}",
                metadata={"name": PLATFORM_POLICY, "namespace": namespace},
                spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]},
                opts=pulumi.ResourceOptions(parent=parent),
            )
        ]


class SystemNodes(pulumi.ComponentResource):
    """Nodes for cluster add-ons (CoreDNS, controllers) in the cluster subnets, and
    CoreDNS, which needs running nodes to become healthy."""

    def __init__(self, name: str, plan: Plan, network: Network, cluster: Cluster, cni: Cni,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:base:SystemNodes", name, None, opts)
        self.node_group = cluster.node_group(
            f"{name}-system",
            # The control plane's AZs: an appended AZ does not replace this group.
            subnet_ids=network.control_plane_subnet_ids,
            size=plan.settings.system_nodes,
            labels=SYSTEM_LABEL,
            taints=[],
            cni=cni,
            parent=self,
        )
        self.coredns = cluster.addon(
            f"{name}-coredns", "coredns", cluster.pins.coredns, parent=self, depends_on=[self.node_group]
        )
        self.register_outputs({"node_group": self.node_group.node_group_name})
