module agentidentity.local/etcdbuild

go 1.24
