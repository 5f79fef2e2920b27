using System.IO.Compression;
using System.Text.Json;
using System.Text.Json.Nodes;
using Gill.ML.MLNet;
using Gill.ML.Serialization;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gill.ML.Persistence;

/// <summary>
/// Save and load of model chains that mix ML.NET transformers and Gill stages: <c>mlContext.Gill().Model</c>.
/// </summary>
/// <remarks>
/// <para>File layout (one zip):</para>
/// <list type="bullet">
/// <item>the root of the zip is an ML.NET model holding only a guard transform (a <c>CustomMapping</c> whose contract name
/// says to load the file with <c>mlContext.Gill().Model.Load</c>), so a plain <c>mlContext.Model.Load</c> fails with that
/// message instead of silently returning a chain without its Gill stages;</item>
/// <item><c>Gill/0-MLNet/model.zip</c>: the ML.NET transformers before the first Gill stage (saved against the input
/// schema);</item>
/// <item><c>Gill/model.json</c>: the chain, part by part;</item>
/// <item><c>Gill/&lt;index&gt;-&lt;Stage&gt;/manifest.json</c> (type, format version, options, columns, seed, backbone paths
/// with SHA-256, tokenizer additions) and <c>weights.safetensors</c> (trainable tensors only) per Gill stage;</item>
/// <item><c>Gill/&lt;index&gt;-MLNet/model.zip</c>: each later run of ML.NET transformers, saved by ML.NET against the schema
/// it sees.</item>
/// </list>
/// Frozen backbones are referenced by path and hash, never copied. The file is written to a temporary file and renamed.
/// </remarks>
public sealed class GillModelOperations
{
    private readonly MLContext _context;

    internal GillModelOperations(MLContext context) => _context = context;

    /// <summary>Saves a model (a single transformer or a chain, ML.NET and Gill stages mixed) to a zip file.</summary>
    /// <param name="model">The fitted model.</param>
    /// <param name="inputSchema">The schema of the data the model is applied to.</param>
    /// <param name="path">Destination file (replaced atomically).</param>
    /// <exception cref="NotSupportedException">A Gill stage of the chain cannot be persisted.</exception>
    public void Save(ITransformer model, DataViewSchema inputSchema, string path)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(inputSchema);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var all = Flatten(model).ToList();
        foreach (var t in all)
            if (t is GillTransformerBase g && t is not IGillPersistable)
                throw new NotSupportedException($"The Gill stage '{g.StageName}' ({t.GetType().FullName}) does not support saving.");

        int firstGill = all.FindIndex(IsGill);
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        var tmp = Path.Combine(dir, "." + Path.GetFileName(full) + "." + Guid.NewGuid().ToString("N") + ".tmp");
        try
        {
            if (firstGill < 0)
            {
                // No Gill stage: an ordinary ML.NET model, loadable by both ML.NET and Gill.ML.
                using (var plain = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
                    _context.Model.Save(new TransformerChain<ITransformer>(all.ToArray()), inputSchema, plain);
                File.Move(tmp, full, overwrite: true);
                return;
            }
            var root = all.Take(firstGill).ToArray();
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
                _context.Model.Save(GillModelGuard.Create(_context), inputSchema, fs);

            var schema = inputSchema;
            foreach (var t in root) schema = t.GetOutputSchema(schema);
            var parts = new JsonArray { new JsonObject { ["kind"] = "mlnet", ["entry"] = GillModelFile.PrefixEntry, ["transformers"] = root.Length } };
            using (var zip = ZipFile.Open(tmp, ZipArchiveMode.Update))
            {
                if (zip.GetEntry(GillModelFile.ModelEntry) is not null) throw new InvalidOperationException("Unexpected Gill entry in the ML.NET part.");
                using (var prefix = new MemoryStream())
                {
                    _context.Model.Save(new TransformerChain<ITransformer>(root), inputSchema, prefix);
                    WriteEntry(zip, GillModelFile.PrefixEntry, prefix.ToArray(), CompressionLevel.NoCompression);
                }
                int i = firstGill;
                while (i < all.Count)
                {
                    int index = parts.Count;
                    if (IsGill(all[i]))
                    {
                        var p = (IGillPersistable)all[i];
                        var folder = $"Gill/{index}-{p.StageName}/";
                        WriteStage(zip, folder, p, all[i]);
                        parts.Add(new JsonObject { ["kind"] = "gill", ["stage"] = p.StageName, ["entry"] = folder });
                        schema = all[i].GetOutputSchema(schema);
                        i++;
                    }
                    else
                    {
                        int j = i;
                        while (j < all.Count && !IsGill(all[j])) j++;
                        var segment = all.Skip(i).Take(j - i).ToArray();
                        var entryName = $"Gill/{index}-MLNet/model.zip";
                        using (var ms = new MemoryStream())
                        {
                            _context.Model.Save(new TransformerChain<ITransformer>(segment), schema, ms);
                            WriteEntry(zip, entryName, ms.ToArray(), CompressionLevel.NoCompression);
                        }
                        foreach (var t in segment) schema = t.GetOutputSchema(schema);
                        parts.Add(new JsonObject { ["kind"] = "mlnet", ["entry"] = entryName, ["transformers"] = segment.Length });
                        i = j;
                    }
                }
                var header = new JsonObject
                {
                    ["format"] = "Gill.ML model",
                    ["formatVersion"] = GillModelFile.FormatVersion,
                    ["library"] = typeof(GillModelOperations).Assembly.GetName().Version?.ToString(),
                    ["parts"] = parts,
                };
                WriteEntry(zip, GillModelFile.ModelEntry, JsonSerializer.SerializeToUtf8Bytes(header, GillModelFile.Json), CompressionLevel.Optimal);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }

    private void WriteStage(ZipArchive zip, string folder, IGillPersistable stage, ITransformer transformer)
    {
        var w = new GillModelWriter(_context, folder);
        stage.SaveTo(w);
        var manifest = new JsonObject
        {
            ["stage"] = stage.StageName,
            ["type"] = transformer.GetType().FullName,
            ["formatVersion"] = stage.FormatVersion,
        };
        if (transformer is GillTransformerBase g)
        {
            manifest["columns"] = new JsonObject
            {
                ["inputs"] = new JsonArray(g.InputColumns.Select(c => (JsonNode)new JsonObject { ["name"] = c.Name, ["type"] = c.Describe() }).ToArray()),
                ["outputs"] = new JsonArray(g.OutputColumns.Select(c => (JsonNode)new JsonObject { ["name"] = c.Name, ["type"] = c.Describe() }).ToArray()),
            };
            manifest["batchSize"] = g.BatchSize;
        }
        manifest["seed"] = w.Seed;
        manifest["options"] = w.Options;
        manifest["backbones"] = JsonSerializer.SerializeToNode(w.Backbones, GillModelFile.Json);
        manifest["tokenizerAdditions"] = JsonSerializer.SerializeToNode(w.Tokens, GillModelFile.Json);
        if (w.Weights is not null) manifest["weights"] = "weights.safetensors";
        if (w.Files.Count > 0) manifest["files"] = new JsonArray(w.Files.Keys.Select(k => (JsonNode)JsonValue.Create(k)).ToArray());
        WriteEntry(zip, folder + "manifest.json", JsonSerializer.SerializeToUtf8Bytes(manifest, GillModelFile.Json), CompressionLevel.Optimal);
        if (w.Weights is not null)
        {
            var tmp = Path.Combine(Path.GetTempPath(), "gill-save-" + Guid.NewGuid().ToString("N") + ".safetensors");
            try
            {
                SafeTensors.Save(tmp, w.Weights, w.WeightsMetadata);
                var entry = zip.CreateEntry(folder + "weights.safetensors", CompressionLevel.NoCompression);
                using var es = entry.Open();
                using var fs = File.OpenRead(tmp);
                fs.CopyTo(es);
            }
            finally
            {
                try { File.Delete(tmp); } catch (IOException) { }
            }
        }
        foreach (var (name, content) in w.Files) WriteEntry(zip, folder + name, content, CompressionLevel.Optimal);
    }

    private static void WriteEntry(ZipArchive zip, string name, byte[] content, CompressionLevel level)
    {
        var entry = zip.CreateEntry(name, level);
        using var s = entry.Open();
        s.Write(content);
    }

    /// <summary>Loads a model saved with <see cref="Save"/> (or a plain ML.NET model) and rebuilds the chain in order.</summary>
    /// <param name="path">The zip file.</param>
    /// <param name="inputSchema">The input schema saved with the model.</param>
    /// <param name="options">Backbone relocation and hash-check options.</param>
    /// <exception cref="InvalidDataException">The file is damaged, a stage has no loader, or a backbone's hash differs.</exception>
    public ITransformer Load(string path, out DataViewSchema inputSchema, GillModelLoadOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Model file not found: '{path}'.", path);
        options ??= new GillModelLoadOptions();
        using var zip = ZipFile.OpenRead(path);
        byte[]? Read(string name)
        {
            var e = zip.GetEntry(name);
            if (e is null) return null;
            using var s = e.Open();
            using var ms = new MemoryStream();
            s.CopyTo(ms);
            return ms.ToArray();
        }
        var modelJson = Read(GillModelFile.ModelEntry);
        ITransformer root;
        if (modelJson is null)
        {
            using var plain = File.OpenRead(path);
            return _context.Model.Load(plain, out inputSchema);
        }

        var model = JsonNode.Parse(modelJson)?.AsObject() ?? throw new InvalidDataException($"'{path}': {GillModelFile.ModelEntry} is empty.");
        int version = model["formatVersion"]?.GetValue<int>() ?? 0;
        if (version < 1 || version > GillModelFile.FormatVersion)
            throw new InvalidDataException($"'{path}' has Gill model format version {version}; this library reads versions 1 to {GillModelFile.FormatVersion}.");
        var parts = model["parts"]?.AsArray() ?? throw new InvalidDataException($"'{path}': {GillModelFile.ModelEntry} lists no parts.");
        var prefixEntry = parts.Count > 0 ? parts[0]?["entry"]?.GetValue<string>() ?? "" : "";
        if (prefixEntry.Length == 0)
        {
            // Format 1: the ML.NET prefix is the root model.
            using var fs = File.OpenRead(path);
            root = _context.Model.Load(fs, out inputSchema);
        }
        else
        {
            var bytes = Read(prefixEntry) ?? throw new InvalidDataException($"'{path}' has no entry '{prefixEntry}'.");
            using var ms = new MemoryStream(bytes);
            root = _context.Model.Load(ms, out inputSchema);
        }
        var list = new List<ITransformer>(Flatten(root));
        try
        {
            foreach (var part in parts.Skip(1))
            {
                var kind = part!["kind"]!.GetValue<string>();
                var entry = part["entry"]!.GetValue<string>();
                if (kind == "mlnet")
                {
                    var bytes = Read(entry) ?? throw new InvalidDataException($"'{path}' has no entry '{entry}'.");
                    using var ms = new MemoryStream(bytes);
                    list.AddRange(Flatten(_context.Model.Load(ms, out _)));
                }
                else if (kind == "gill")
                {
                    var stage = part["stage"]!.GetValue<string>();
                    var manifestBytes = Read(entry + "manifest.json") ?? throw new InvalidDataException($"'{path}' has no entry '{entry}manifest.json'.");
                    var manifest = JsonNode.Parse(manifestBytes)!.AsObject();
                    var loader = GillStageRegistry.Find(stage);
                    using var reader = new GillModelReader(_context, options, entry, manifest, Read);
                    list.Add(loader(reader));
                }
                else
                {
                    throw new InvalidDataException($"'{path}': unknown part kind '{kind}' in {GillModelFile.ModelEntry}.");
                }
            }
        }
        catch
        {
            foreach (var t in list) (t as IDisposable)?.Dispose();
            throw;
        }
        return new TransformerChain<ITransformer>(list.ToArray());
    }

    private static bool IsGill(ITransformer t) => t is IGillPersistable || t is GillTransformerBase;

    private static IEnumerable<ITransformer> Flatten(ITransformer t)
    {
        if (t is IEnumerable<ITransformer> chain)
        {
            foreach (var inner in chain)
                foreach (var x in Flatten(inner)) yield return x;
        }
        else
        {
            yield return t;
        }
    }
}
