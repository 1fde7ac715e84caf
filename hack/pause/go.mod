module agentidentity.local/pause

go 1.24
