using System.Text.Json.Nodes;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Backbones;

/// <summary>Temporary model folders composed from the CLIP fixtures.</summary>
internal sealed class ClipTempFolder : IDisposable
{
    public ClipTempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "gill-clip-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string Sub(string name)
    {
        var p = System.IO.Path.Combine(Path, name);
        Directory.CreateDirectory(p);
        return p;
    }

    public void Dispose()
    {
        if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
    }

    public static JsonObject ReadConfig(string fixture) =>
        (JsonObject)JsonNode.Parse(File.ReadAllText(System.IO.Path.Combine(Fixtures.Dir(fixture), "config.json")))!;

    public static void WriteConfig(string folder, JsonObject config) =>
        File.WriteAllText(System.IO.Path.Combine(folder, "config.json"), config.ToJsonString());

    /// <summary>Writes a folder with the given config and tensors (disposed afterwards).</summary>
    public static void Write(string folder, JsonObject config, Dictionary<string, Tensor> tensors)
    {
        WriteConfig(folder, config);
        SafeTensors.Save(System.IO.Path.Combine(folder, "model.safetensors"), tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal));
        foreach (var t in tensors.Values) t.Dispose();
    }

    /// <summary>A full CLIPModel checkpoint (model_type "clip") made of both tiny fixtures plus logit_scale.</summary>
    public static void WriteFullClip(string folder)
    {
        var tensors = SafeTensors.LoadAll(System.IO.Path.Combine(Fixtures.Dir("clip-vision-tiny"), "model.safetensors"));
        foreach (var (k, v) in SafeTensors.LoadAll(System.IO.Path.Combine(Fixtures.Dir("clip-text-tiny"), "model.safetensors")))
            tensors.Add(k, v);
        tensors.Add("logit_scale", torch.tensor(2.6592f));
        var text = ReadConfig("clip-text-tiny");
        var vision = ReadConfig("clip-vision-tiny");
        var config = new JsonObject
        {
            ["model_type"] = "clip",
            ["architectures"] = new JsonArray("CLIPModel"),
            ["projection_dim"] = 16,
            ["logit_scale_init_value"] = 2.6592,
            ["text_config"] = text,
            ["vision_config"] = vision,
        };
        Write(folder, config, tensors);
    }
}
