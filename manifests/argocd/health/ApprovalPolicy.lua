-- Argo CD health of agentidentity.io/ApprovalPolicy: Ready condition when the operator
-- reports one; a policy without status is plain configuration and Healthy.
local hs = {}
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Stalled" and c.status == "True" then
      hs.status = "Degraded"
      hs.message = c.message or c.reason
      return hs
    end
  end
  local gen = obj.metadata.generation
  local observed = obj.status.observedGeneration
  if gen ~= nil and observed ~= nil and observed < gen then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to observe generation " .. tostring(gen)
    return hs
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then
      if c.status == "True" then
        hs.status = "Healthy"
      elseif c.status == "False" then
        hs.status = "Degraded"
      else
        hs.status = "Progressing"
      end
      hs.message = c.message or c.reason
      return hs
    end
  end
end
hs.status = "Healthy"
hs.message = "ApprovalPolicy is configuration"
return hs
