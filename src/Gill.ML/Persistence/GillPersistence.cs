using System.Collections.Concurrent;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Gill.ML.MLNet;
using Gill.ML.Serialization;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using TorchSharp;

namespace Gill.ML.Persistence;

/// <summary>A Gill transformer that can write itself into a Gill model file.</summary>
/// <remarks>
/// The type also needs a loader: mark it with <see cref="GillStageAttribute"/> and give it a static
/// <c>LoadFrom(GillModelReader)</c> method returning the transformer, or call <see cref="GillStageRegistry.Register"/>.
/// </remarks>
public interface IGillPersistable
{
    /// <summary>Stage name, the key of its loader (e.g. "VisualFeatures").</summary>
    string StageName { get; }

    /// <summary>Version of the stage's saved layout, written to the manifest and passed back to the loader.</summary>
    int FormatVersion { get; }

    /// <summary>Writes options, backbone references, tokenizer additions and trainable weights.</summary>
    void SaveTo(GillModelWriter writer);
}

/// <summary>Marks a persistable Gill transformer; its static <c>LoadFrom(GillModelReader)</c> is the stage's loader.</summary>
[AttributeUsage(AttributeTargets.Class, Inherited = false)]
public sealed class GillStageAttribute : Attribute
{
    /// <summary>Declares the stage name.</summary>
    public GillStageAttribute(string stageName) => StageName = stageName;

    /// <summary>The stage name.</summary>
    public string StageName { get; }
}

/// <summary>Loaders of Gill stages by stage name.</summary>
public static class GillStageRegistry
{
    private static readonly ConcurrentDictionary<string, Func<GillModelReader, ITransformer>> Loaders = new(StringComparer.Ordinal);
    private static readonly HashSet<Assembly> Scanned = new();

    /// <summary>Registers (or replaces) the loader of a stage.</summary>
    public static void Register(string stageName, Func<GillModelReader, ITransformer> loader)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(stageName);
        Loaders[stageName] = loader ?? throw new ArgumentNullException(nameof(loader));
    }

    internal static Func<GillModelReader, ITransformer> Find(string stageName)
    {
        if (Loaders.TryGetValue(stageName, out var l)) return l;
        lock (Scanned)
        {
            foreach (var asm in AppDomain.CurrentDomain.GetAssemblies())
            {
                if (asm.IsDynamic || !Scanned.Add(asm)) continue;
                if (asm != typeof(GillStageRegistry).Assembly && !asm.GetReferencedAssemblies().Any(a => a.Name == typeof(GillStageRegistry).Assembly.GetName().Name)) continue;
                Type[] types;
                try { types = asm.GetTypes(); }
                catch (ReflectionTypeLoadException e) { types = e.Types.Where(t => t is not null).ToArray()!; }
                foreach (var t in types)
                {
                    var attr = t.GetCustomAttribute<GillStageAttribute>();
                    if (attr is null) continue;
                    var m = t.GetMethod("LoadFrom", BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic, new[] { typeof(GillModelReader) });
                    if (m is null || !typeof(ITransformer).IsAssignableFrom(m.ReturnType))
                        throw new InvalidOperationException($"{t.FullName} is marked [GillStage(\"{attr.StageName}\")] but has no static LoadFrom(GillModelReader) returning a transformer.");
                    // Func<in T, out TResult> is covariant in its result, so the typed delegate is a loader as is.
                    var loader = (Func<GillModelReader, ITransformer>)m.CreateDelegate(typeof(Func<,>).MakeGenericType(typeof(GillModelReader), m.ReturnType));
                    Loaders.TryAdd(attr.StageName, loader);
                }
            }
        }
        if (Loaders.TryGetValue(stageName, out l)) return l;
        throw new InvalidDataException($"The model contains a Gill stage '{stageName}' with no registered loader. Reference the assembly that defines it, " +
            $"or call GillStageRegistry.Register(\"{stageName}\", ...) before loading. Known stages: {string.Join(", ", Loaders.Keys.OrderBy(k => k, StringComparer.Ordinal))}.");
    }
}

/// <summary>A frozen backbone a stage depends on: recorded by path and content hash, never copied into the model file.</summary>
public sealed record GillBackboneReference(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("path")] string Path,
    [property: JsonPropertyName("sha256")] string Sha256,
    [property: JsonPropertyName("bytes")] long Bytes);

/// <summary>A token added to a tokenizer by a stage (e.g. GILL's <c>[IMG0]</c>…<c>[IMG7]</c>).</summary>
public sealed record GillTokenAddition(
    [property: JsonPropertyName("token")] string Token,
    [property: JsonPropertyName("id")] int Id);

/// <summary>What a stage writes when saved: collected by <see cref="IGillPersistable.SaveTo"/>, then stored in the zip.</summary>
public sealed class GillModelWriter
{
    internal readonly JsonObject Options = new();
    internal readonly List<GillBackboneReference> Backbones = new();
    internal readonly List<GillTokenAddition> Tokens = new();
    internal readonly Dictionary<string, byte[]> Files = new(StringComparer.Ordinal);
    internal List<KeyValuePair<string, TorchSharp.torch.Tensor>>? Weights;
    internal Dictionary<string, string>? WeightsMetadata;

    internal GillModelWriter(MLContext context, string stageFolder)
    {
        Context = context;
        StageFolder = stageFolder;
    }

    /// <summary>The context of the save call.</summary>
    public MLContext Context { get; }

    /// <summary>The stage's folder inside the zip (<c>Gill/&lt;index&gt;-&lt;Stage&gt;/</c>).</summary>
    public string StageFolder { get; }

    /// <summary>The seed the stage was trained with, recorded in the manifest.</summary>
    public int? Seed { get; set; }

    /// <summary>Stores an options object (serialised with System.Text.Json) under <paramref name="key"/> in the manifest.</summary>
    public void SetOptions<T>(string key, T value)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(key);
        Options[key] = JsonSerializer.SerializeToNode(value, GillModelFile.Json);
    }

    /// <summary>Records a frozen backbone (file or folder) by path and SHA-256.</summary>
    public void AddBackbone(string name, string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (Backbones.Any(b => b.Name == name)) throw new ArgumentException($"Backbone '{name}' was added twice.", nameof(name));
        var full = System.IO.Path.GetFullPath(path);
        var (hash, bytes) = GillModelFile.HashPath(full);
        Backbones.Add(new GillBackboneReference(name, full, hash, bytes));
    }

    /// <summary>Records a token the stage added to a tokenizer.</summary>
    public void AddTokenizerAddition(string token, int id) => Tokens.Add(new GillTokenAddition(token, id));

    /// <summary>Stores the stage's trainable tensors as <c>weights.safetensors</c> (written when the zip is built).</summary>
    public void WriteWeights(IEnumerable<KeyValuePair<string, TorchSharp.torch.Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (Weights is not null) throw new InvalidOperationException("WriteWeights was already called for this stage.");
        Weights = tensors.ToList();
        WeightsMetadata = metadata?.ToDictionary(k => k.Key, k => k.Value);
    }

    /// <summary>Stores an extra file in the stage folder.</summary>
    public void WriteFile(string name, byte[] content)
    {
        if (name is "manifest.json" or "weights.safetensors" || name.Contains('/') || name.Contains('\\'))
            throw new ArgumentException($"'{name}' is not a valid extra file name.", nameof(name));
        Files[name] = content;
    }
}

/// <summary>Options of <see cref="GillModelOperations.Load"/>.</summary>
public sealed class GillModelLoadOptions
{
    /// <summary>
    /// New locations of backbones, keyed by backbone name (e.g. "onnx-model") or by the path recorded at save time.
    /// </summary>
    public IDictionary<string, string> BackbonePaths { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Check each backbone's SHA-256 against the saved one (default true).</summary>
    public bool VerifyBackboneHashes { get; set; } = true;

    /// <summary>
    /// Load even when a backbone's hash differs from the saved one, logging a warning to the MLContext log instead of
    /// throwing (default false).
    /// </summary>
    public bool AllowBackboneMismatch { get; set; }
}

/// <summary>Gives a stage's loader its saved manifest, options, backbones and weights.</summary>
public sealed class GillModelReader : IDisposable
{
    private readonly JsonObject _manifest;
    private readonly Func<string, byte[]?> _readEntry;
    private string? _weightsTemp;
    private SafeTensorsFile? _weights;

    internal GillModelReader(MLContext context, GillModelLoadOptions options, string stageFolder, JsonObject manifest, Func<string, byte[]?> readEntry)
    {
        Context = context;
        LoadOptions = options;
        StageFolder = stageFolder;
        _manifest = manifest;
        _readEntry = readEntry;
    }

    /// <summary>The context of the load call (device settings, log).</summary>
    public MLContext Context { get; }

    /// <summary>The load options.</summary>
    public GillModelLoadOptions LoadOptions { get; }

    /// <summary>The stage folder in the zip.</summary>
    public string StageFolder { get; }

    /// <summary>The stage's saved format version.</summary>
    public int FormatVersion => _manifest["formatVersion"]!.GetValue<int>();

    /// <summary>The saved seed, if any.</summary>
    public int? Seed => _manifest["seed"]?.GetValue<int>();

    /// <summary>The saved tokenizer additions.</summary>
    public IReadOnlyList<GillTokenAddition> TokenizerAdditions =>
        _manifest["tokenizerAdditions"]?.Deserialize<List<GillTokenAddition>>(GillModelFile.Json) ?? new List<GillTokenAddition>();

    /// <summary>The saved backbone references.</summary>
    public IReadOnlyList<GillBackboneReference> Backbones =>
        _manifest["backbones"]?.Deserialize<List<GillBackboneReference>>(GillModelFile.Json) ?? new List<GillBackboneReference>();

    /// <summary>Reads an options object stored with <see cref="GillModelWriter.SetOptions"/>.</summary>
    public T GetOptions<T>(string key)
    {
        var node = _manifest["options"]?[key] ?? throw new InvalidDataException($"{StageFolder}manifest.json has no options '{key}'.");
        return node.Deserialize<T>(GillModelFile.Json) ?? throw new InvalidDataException($"{StageFolder}manifest.json: options '{key}' are null.");
    }

    /// <summary>
    /// Returns the path of a saved backbone (or its replacement from <see cref="GillModelLoadOptions.BackbonePaths"/>),
    /// after checking its SHA-256 against the saved one.
    /// </summary>
    /// <exception cref="FileNotFoundException">The backbone is missing.</exception>
    /// <exception cref="InvalidDataException">The hash differs and <see cref="GillModelLoadOptions.AllowBackboneMismatch"/> is off.</exception>
    public string ResolveBackbone(string name)
    {
        var saved = Backbones.FirstOrDefault(b => b.Name == name)
            ?? throw new InvalidDataException($"{StageFolder}manifest.json has no backbone '{name}' (backbones: {string.Join(", ", Backbones.Select(b => b.Name))}).");
        var path = LoadOptions.BackbonePaths.TryGetValue(name, out var p) ? p
            : LoadOptions.BackbonePaths.TryGetValue(saved.Path, out p) ? p : saved.Path;
        path = System.IO.Path.GetFullPath(path);
        if (!File.Exists(path) && !Directory.Exists(path))
            throw new FileNotFoundException($"Backbone '{name}' of {StageFolder.TrimEnd('/')} not found at '{path}' (saved from '{saved.Path}'). " +
                "Pass its new location in GillModelLoadOptions.BackbonePaths.", path);
        if (!LoadOptions.VerifyBackboneHashes) return path;
        var (hash, _) = GillModelFile.HashPath(path);
        if (!string.Equals(hash, saved.Sha256, StringComparison.OrdinalIgnoreCase))
        {
            var message = $"Backbone '{name}' of {StageFolder.TrimEnd('/')} at '{path}' has SHA-256 {hash}, but the model was saved with {saved.Sha256} " +
                $"('{saved.Path}'). The stage's outputs would differ from the saved model's.";
            if (!LoadOptions.AllowBackboneMismatch)
                throw new InvalidDataException(message + " Set GillModelLoadOptions.AllowBackboneMismatch to load anyway.");
            using var ch = ((IHostEnvironment)Context).Start("Gill.Model");
            ch.Warning(MessageSensitivity.None, message + " Loading anyway (AllowBackboneMismatch).");
        }
        return path;
    }

    /// <summary>True when the stage saved weights.</summary>
    public bool HasWeights => _manifest["weights"] is not null;

    /// <summary>Opens the stage's <c>weights.safetensors</c> (valid until the reader is disposed).</summary>
    public SafeTensorsFile OpenWeights()
    {
        if (_weights is not null) return _weights;
        var bytes = _readEntry(StageFolder + "weights.safetensors")
            ?? throw new InvalidDataException($"The model file has no {StageFolder}weights.safetensors.");
        _weightsTemp = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "gill-weights-" + Guid.NewGuid().ToString("N") + ".safetensors");
        File.WriteAllBytes(_weightsTemp, bytes);
        return _weights = SafeTensorsFile.Open(_weightsTemp);
    }

    /// <summary>Reads an extra file written with <see cref="GillModelWriter.WriteFile"/>.</summary>
    public byte[] ReadFile(string name) =>
        _readEntry(StageFolder + name) ?? throw new InvalidDataException($"The model file has no {StageFolder}{name}.");

    /// <inheritdoc />
    public void Dispose()
    {
        _weights?.Dispose();
        _weights = null;
        if (_weightsTemp is not null)
        {
            try { File.Delete(_weightsTemp); } catch (IOException) { }
            _weightsTemp = null;
        }
    }
}

/// <summary>Zip layout, JSON settings and hashing shared by save and load.</summary>
internal static class GillModelFile
{
    public const string ModelEntry = "Gill/model.json";
    public const int FormatVersion = 2;

    /// <summary>Entry holding the ML.NET transformers before the first Gill stage (format 2 and later).</summary>
    public const string PrefixEntry = "Gill/0-MLNet/model.zip";

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private static readonly ConcurrentDictionary<(string, long, DateTime), string> HashCache = new();

    /// <summary>SHA-256 of a file, or of a folder (relative paths and file hashes, in ordinal order); cached by size and time.</summary>
    public static (string Hash, long Bytes) HashPath(string path)
    {
        if (File.Exists(path)) return (HashFile(path), new FileInfo(path).Length);
        if (!Directory.Exists(path)) throw new FileNotFoundException($"Backbone not found: '{path}'.", path);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long total = 0;
        foreach (var f in Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories)
                     .Select(f => System.IO.Path.GetRelativePath(path, f).Replace('\\', '/')).OrderBy(f => f, StringComparer.Ordinal))
        {
            var full = System.IO.Path.Combine(path, f);
            sha.AppendData(Encoding.UTF8.GetBytes(f + "\0" + HashFile(full) + "\n"));
            total += new FileInfo(full).Length;
        }
        return (Convert.ToHexStringLower(sha.GetHashAndReset()), total);
    }

    private static string HashFile(string path)
    {
        var info = new FileInfo(path);
        var key = (info.FullName, info.Length, info.LastWriteTimeUtc);
        if (HashCache.TryGetValue(key, out var h)) return h;
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        h = Convert.ToHexStringLower(SHA256.HashData(fs));
        HashCache[key] = h;
        return h;
    }
}
