-- Argo CD health of agentidentity.io/ApprovalRequest: Pending is waiting for people,
-- Approved is done, Denied and Expired are failures someone should look at.
local hs = {}
local state = obj.status ~= nil and obj.status.state or nil
if state == nil or state == "Pending" then
  hs.status = "Progressing"
  hs.message = "Waiting for approvers"
elseif state == "Approved" then
  hs.status = "Healthy"
  hs.message = "Approved"
elseif state == "Denied" or state == "Expired" then
  hs.status = "Degraded"
  hs.message = state
else
  hs.status = "Unknown"
  hs.message = "Unknown state " .. tostring(state)
end
if obj.status ~= nil and obj.status.decisions ~= nil then
  hs.message = hs.message .. " (" .. tostring(#obj.status.decisions) .. " decisions)"
end
return hs
