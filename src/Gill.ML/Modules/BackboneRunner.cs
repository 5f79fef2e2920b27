using System.Text.Json.Nodes;
using Gill.ML.Modules.Clip;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Modules;

/// <summary>
/// Runs any supported backbone folder on named inputs and writes its outputs under Hugging Face's names — the tool for
/// checking a checkpoint against Python. Inputs (safetensors): <c>input_ids</c>, <c>attention_mask</c>,
/// <c>pixel_values</c>, <c>inputs_embeds</c>. Outputs: <c>last_hidden_state</c>, <c>logits</c>, <c>pooler_output</c>,
/// <c>image_embeds</c>, <c>text_embeds</c>, <c>hidden_states.N</c> (for a full CLIP folder given both images and text:
/// <c>vision_model_output.*</c> and <c>text_model_output.*</c> plus the two embeddings).
/// </summary>
public static class BackboneRunner
{
    /// <summary>Reads <c>model_type</c> from a checkpoint folder's config.json.</summary>
    public static string ReadModelType(string checkpointFolder)
    {
        if (!Directory.Exists(checkpointFolder)) throw new DirectoryNotFoundException($"Checkpoint folder not found: '{checkpointFolder}'.");
        var configPath = Path.Combine(checkpointFolder, "config.json");
        if (!File.Exists(configPath)) throw new FileNotFoundException($"No config.json in '{checkpointFolder}'.", configPath);
        var json = JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject
                   ?? throw new InvalidDataException($"'{configPath}' is not a JSON object.");
        return json["model_type"]?.GetValue<string>() ?? throw new InvalidDataException($"'{configPath}' has no model_type.");
    }

    /// <summary>
    /// Runs the backbone in <paramref name="checkpointFolder"/> on the tensors of <paramref name="inputsPath"/> and writes
    /// the outputs to <paramref name="outputPath"/> (atomically). Returns the written names and shapes.
    /// </summary>
    public static IReadOnlyList<(string Name, long[] Shape)> Run(string checkpointFolder, string inputsPath, string outputPath, Device? device = null)
    {
        var modelType = ReadModelType(checkpointFolder);
        var inputs = SafeTensors.LoadAll(inputsPath);
        try
        {
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            var outputs = new List<KeyValuePair<string, Tensor>>();
            device ??= CPU;
            switch (modelType)
            {
                case "opt":
                case "gpt2":
                    RunCausalLM(checkpointFolder, inputs, outputs, device);
                    break;
                case "clip_vision_model":
                    RunVision(checkpointFolder, Require(inputs, "pixel_values", modelType), outputs, "", device);
                    break;
                case "clip_text_model":
                    RunText(checkpointFolder, Require(inputs, "input_ids", modelType), inputs.GetValueOrDefault("attention_mask"), outputs, "", device);
                    break;
                case "clip":
                    bool hasPixels = inputs.ContainsKey("pixel_values"), hasIds = inputs.ContainsKey("input_ids");
                    if (!hasPixels && !hasIds)
                        throw new ArgumentException($"'{inputsPath}' has neither 'pixel_values' nor 'input_ids' for the CLIP model in '{checkpointFolder}'.");
                    if (hasPixels) RunVision(checkpointFolder, inputs["pixel_values"], outputs, hasIds ? "vision_model_output." : "", device);
                    if (hasIds) RunText(checkpointFolder, inputs["input_ids"], inputs.GetValueOrDefault("attention_mask"), outputs, hasPixels ? "text_model_output." : "", device);
                    break;
                default:
                    throw new NotSupportedException(
                        $"'{checkpointFolder}' has model_type '{modelType}'; supported: opt, gpt2, clip, clip_vision_model, clip_text_model.");
            }
            var cpu = outputs.Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.detach().cpu().contiguous())).ToList();
            SafeTensors.Save(outputPath, cpu);
            return cpu.Select(kv => (kv.Key, kv.Value.shape)).ToList();
        }
        finally
        {
            foreach (var t in inputs.Values) t.Dispose();
        }
    }

    private static Tensor Require(Dictionary<string, Tensor> inputs, string name, string modelType) =>
        inputs.TryGetValue(name, out var t) ? t : throw new ArgumentException($"The inputs have no '{name}' tensor, which a '{modelType}' model needs (found: {string.Join(", ", inputs.Keys)}).");

    private static void RunCausalLM(string folder, Dictionary<string, Tensor> inputs, List<KeyValuePair<string, Tensor>> outputs, Device device)
    {
        using var lm = CausalLM.Load(folder, new CausalLMLoadOptions { Device = device });
        inputs.TryGetValue("input_ids", out var ids);
        inputs.TryGetValue("inputs_embeds", out var embeds);
        if ((ids is null) == (embeds is null))
            throw new ArgumentException("Give exactly one of 'input_ids' or 'inputs_embeds' for a causal LM.");
        inputs.TryGetValue("attention_mask", out var mask);
        var o = lm.Forward(new CausalLMInput
        {
            InputIds = ids?.to(ScalarType.Int64).to(device),
            InputsEmbeds = embeds?.to(lm.DType).to(device),
            AttentionMask = mask?.to(device),
            OutputHiddenStates = true,
        });
        outputs.Add(new("last_hidden_state", o.LastHiddenState));
        if (o.Logits is not null) outputs.Add(new("logits", o.Logits));
        for (int i = 0; i < (o.HiddenStates?.Count ?? 0); i++) outputs.Add(new($"hidden_states.{i}", o.HiddenStates![i]));
    }

    private static void RunVision(string folder, Tensor pixels, List<KeyValuePair<string, Tensor>> outputs, string prefix, Device device)
    {
        using var vision = ClipVisionEncoder.Load(folder, new ClipLoadOptions { Device = device });
        using var o = vision.Forward(pixels.to(ScalarType.Float32).to(device), outputHiddenStates: true);
        outputs.Add(new(prefix + "last_hidden_state", o.LastHiddenState.alias()));
        outputs.Add(new(prefix + "pooler_output", o.PooledFeatures.alias()));
        if (o.ImageEmbeddings is not null) outputs.Add(new("image_embeds", o.ImageEmbeddings.alias()));
        for (int i = 0; i < (o.HiddenStates?.Count ?? 0); i++) outputs.Add(new($"{prefix}hidden_states.{i}", o.HiddenStates![i].alias()));
    }

    private static void RunText(string folder, Tensor ids, Tensor? mask, List<KeyValuePair<string, Tensor>> outputs, string prefix, Device device)
    {
        using var text = ClipTextEncoder.Load(folder, new ClipLoadOptions { Device = device });
        using var o = text.Forward(ids.to(ScalarType.Int64).to(device), mask?.to(device), outputHiddenStates: true);
        outputs.Add(new(prefix + "last_hidden_state", o.LastHiddenState.alias()));
        outputs.Add(new(prefix + "pooler_output", o.PooledOutput.alias()));
        if (o.TextEmbeddings is not null) outputs.Add(new("text_embeds", o.TextEmbeddings.alias()));
        for (int i = 0; i < (o.HiddenStates?.Count ?? 0); i++) outputs.Add(new($"{prefix}hidden_states.{i}", o.HiddenStates![i].alias()));
    }
}
