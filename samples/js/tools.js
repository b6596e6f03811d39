import ModelClient from "@azure-rest/ai-inference";
import { AzureKeyCredential } from "@azure/core-auth";

// The official tools sample (github/codespaces-models, samples/js/azure_ai_inference/tools.js).
// Changed: key and endpoint come from the environment (the local model server by default).
const token = process.env["PHI_API_KEY"] ?? "no-key-needed";
const endpoint = process.env["PHI_ENDPOINT"] ?? "http://127.0.0.1:8765";
// Changed: the model from PHI_MODEL; unset, the request names none and the server answers with
// its own model (for this sample it must support tools: Phi-4-mini-instruct does).
const modelName = process.env["PHI_MODEL"];
// Changed: a plain http:// endpoint (the local server) must be allowed explicitly.
const options = endpoint.startsWith("http://") ? { allowInsecureConnection: true } : {};

function getFlightInfo({originCity, destinationCity}){
  if (originCity === "Seattle" && destinationCity === "Miami"){
    return JSON.stringify({
      airline: "Delta",
      flight_number: "DL123",
      flight_date: "May 7th, 2024",
      flight_time: "10:00AM"
    });
  }
  return JSON.stringify({error: "No flights found between the cities"});
}

const namesToFunctions = {
  getFlightInfo: (data) =>
  getFlightInfo(data),
};

export async function main() {

  const tool = {
    "type": "function",
    "function": {
      name: "getFlightInfo",
      description: "Returns information about the next flight between two cities." +
               "This includes the name of the airline, flight number and the date and time" +
               "of the next flight",
      parameters: {
        "type": "object",
        "properties": {
          "originCity": {
            "type": "string",
            "description": "The name of the city where the flight originates",
          },
          "destinationCity": {
            "type": "string",
            "description": "The flight destination city",
          },
        },
        "required": [
          "originCity",
          "destinationCity"
        ],
      }
    }
  };

  const client = new ModelClient(endpoint, new AzureKeyCredential(token), options);

  let messages=[
    {role: "system", content: "You an assistant that helps users find flight information."},
    {role: "user", content: "I'm interested in going to Miami. What is the next flight there from Seattle?"},
  ];

  let response = await client.path("/chat/completions").post({
      body: {
      messages: messages,
    tools: [tool],
      model: modelName,
      // Changed: a cap on the answer's length, in case the model answers in text.
      max_tokens: 200
    }
  });
  if (response.status !== "200") {
    throw response.body.error;
  }

  // We expect the model to ask for a tool call
  if (response.body.choices[0].finish_reason === "tool_calls"){

    // Append the model response to the chat history
    messages.push(response.body.choices[0].message);

    // Changed: every tool call gets its tool message (a model may ask for several at once;
    // the original handled exactly one and said nothing otherwise).
    for (const toolCall of response.body.choices[0].message.tool_calls) {
      // We expect the tool to be a function call
      if (toolCall.type === "function"){
        // Parse the function call arguments and call the function
        const functionArgs = JSON.parse(toolCall.function.arguments);
        console.log(`Calling function \`${toolCall.function.name}\` with arguments ${toolCall.function.arguments}`);
        // Changed: only a function of namesToFunctions runs; any other name gets an error back.
        const callableFunc = namesToFunctions[toolCall.function.name];
        const functionReturn = callableFunc
          ? callableFunc(functionArgs)
          : JSON.stringify({error: `There is no function ${toolCall.function.name}`});
        console.log(`Function returned = ${functionReturn}`);

        // Append the function call result fo the chat history
        messages.push(
          {
            "tool_call_id": toolCall.id,
            "role": "tool",
            "name": toolCall.function.name,
            "content": functionReturn,
          }
        )
      }
    }

    response = await client.path("/chat/completions").post({
      body: {
        messages: messages,
        tools: [tool],
        model: modelName,
        max_tokens: 200
      }
    });
    if (response.status !== "200") {
      throw response.body.error;
    }
    // Changed: a small model may ask for the tool again instead of answering; say so.
    if (response.body.choices[0].finish_reason === "tool_calls") {
      console.log(`The model asked for the tool again instead of answering: ${JSON.stringify(response.body.choices[0].message.tool_calls.map((c) => c.function))}`);
    } else {
      console.log(`Model response = ${response.body.choices[0].message.content}`);
    }
  } else {
    // Changed: say so when the model answered in text instead of asking for the tool.
    console.log(`The model answered without calling a tool (finish_reason ${response.body.choices[0].finish_reason}): ${response.body.choices[0].message.content}`);
  }
}

main().catch((err) => {
  console.error("The sample encountered an error:", err);
});
