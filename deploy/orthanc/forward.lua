-- Forward each stored radiograph to one of the node's receivers, in turn; never the node's own
-- results (Structured Reports 1.2.840.10008.5.1.4.1.1.88.*, Secondary Captures ...1.1.7*).
local NODE_OUTPUT_CLASSES = {'1.2.840.10008.5.1.4.1.1.88.', '1.2.840.10008.5.1.4.1.1.7'}
local RECEIVERS = {'osteonode-a', 'osteonode-b'}
local nextReceiver = 1

function OnStoredInstance(instanceId, tags, metadata, origin)
  local sopClass = tags['SOPClassUID'] or ''
  for _, prefix in ipairs(NODE_OUTPUT_CLASSES) do
    if string.sub(sopClass, 1, string.len(prefix)) == prefix then
      return
    end
  end
  SendToModality(instanceId, RECEIVERS[nextReceiver])
  nextReceiver = nextReceiver % #RECEIVERS + 1
end
