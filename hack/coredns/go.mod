module agentidentity.local/corednsbuild

go 1.26
