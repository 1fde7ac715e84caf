-- Argo CD health of agentidentity.io/Agent (kstatus-compatible status: Ready,
-- Reconciling, Stalled, observedGeneration; phase for humans).
local hs = {}
local function cond(obj, t)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == t then return c end
    end
  end
  return nil
end
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the agent"
  return hs
end
local phase = obj.status.phase
local ready = cond(obj, "Ready")
local stalled = cond(obj, "Stalled")
if phase == "Retired" then
  hs.status = "Degraded"
  hs.message = "Agent is Retired" .. ((ready and ready.message and (": " .. ready.message)) or "")
  return hs
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message or stalled.reason or "Stalled"
  return hs
end
if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = (ready and ready.message) or "Agent is Suspended"
  return hs
end
local gen = obj.metadata.generation
local observed = obj.status.observedGeneration
if gen ~= nil and (observed == nil or observed < gen) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(gen)
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
hs.status = "Progressing"
hs.message = (ready and (ready.message or ready.reason)) or "Waiting for the Ready condition"
return hs
