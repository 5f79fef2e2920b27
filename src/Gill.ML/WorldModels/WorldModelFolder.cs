using System.Text.Json;
using Gill.ML.Serialization;
using TorchSharp;

namespace Gill.ML.WorldModels;

/// <summary>The folder layout of the world's own modules: <c>config.json</c> (with a <c>model_type</c>) and <c>model.safetensors</c>.</summary>
internal static class WorldModelFolder
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Writes the config and the module's state dict, each atomically.</summary>
    public static void Save<TConfig>(string folder, TConfig config, torch.nn.Module module)
    {
        Directory.CreateDirectory(folder);
        AtomicFile.WriteAllText(Path.Combine(folder, "config.json"), JsonSerializer.Serialize(config, Indented));
        SafeTensors.Save(Path.Combine(folder, "model.safetensors"), module.state_dict());
    }

    /// <summary>Reads config.json and checks its model type; errors name the file.</summary>
    public static TConfig ReadConfig<TConfig>(string folder, string expectedModelType, Func<TConfig, string> modelType, string what)
    {
        var configPath = Path.Combine(folder, "config.json");
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{what} config not found: '{configPath}'.", configPath);
        var config = JsonSerializer.Deserialize<TConfig>(File.ReadAllText(configPath))
                     ?? throw new InvalidDataException($"'{configPath}' is empty.");
        if (modelType(config) != expectedModelType)
            throw new InvalidDataException($"'{configPath}' has model_type '{modelType(config)}', expected '{expectedModelType}'.");
        return config;
    }

    /// <summary>
    /// Loads the weights strictly, puts the module in eval mode (and, when <paramref name="freeze"/>, turns gradients off)
    /// and moves it to <paramref name="device"/>.
    /// </summary>
    public static T LoadWeights<T>(string folder, T module, torch.Device? device, bool freeze) where T : torch.nn.Module
    {
        using (var ck = SafeTensorsCheckpoint.Open(folder)) WeightLoader.Load(module, ck, k => k);
        module.eval();
        if (freeze)
            foreach (var p in module.parameters()) p.requires_grad = false;
        if (device is not null) module.to(device);
        return module;
    }
}
