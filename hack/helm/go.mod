// The throwaway module helm is built in (agent_identity.devcluster.helm copies it
// into the cache and runs `go get -tool helm.sh/helm/v4/cmd/helm@<version>`).
module agentidentity.local/helmbuild

go 1.25
