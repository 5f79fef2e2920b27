using System.Text.Json;

namespace Gill.ML.World;

/// <summary>A generated shapes world read back as typed records (absolute image paths).</summary>
public sealed class ShapesWorldDataset
{
    private readonly Dictionary<ShapesSplit, IReadOnlyList<ShapesImageExample>> _images;
    private readonly Dictionary<ShapesSplit, IReadOnlyList<ShapesStory>> _stories;
    private readonly Dictionary<ShapesSplit, IReadOnlyList<ShapesDialogue>> _dialogues;
    private readonly Dictionary<ShapesSplit, IReadOnlyList<ShapesDecisionPrompt>> _decision;

    private ShapesWorldDataset(ShapesWorldManifest manifest)
    {
        Manifest = manifest;
        _images = manifest.Images.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<ShapesImageExample>)ReadLines<ShapesImageExample>(kv.Value)
            .Select(x => x with { ImagePath = manifest.PathOf(x.Image) }).ToList());
        _stories = manifest.Stories.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<ShapesStory>)ReadLines<ShapesStory>(kv.Value)
            .Select(s => s with { Steps = [.. s.Steps.Select(x => x with { ImagePath = manifest.PathOf(x.Image) })] }).ToList());
        _dialogues = manifest.Dialogues.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<ShapesDialogue>)ReadLines<ShapesDialogue>(kv.Value)
            .Select(x => x with { ImagePath = manifest.PathOf(x.Image) }).ToList());
        _decision = manifest.DecisionPrompts.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<ShapesDecisionPrompt>)ReadLines<ShapesDecisionPrompt>(kv.Value));
    }

    /// <summary>The world's manifest (world.json).</summary>
    public ShapesWorldManifest Manifest { get; }

    /// <summary>The world folder.</summary>
    public string Folder => Manifest.Folder;

    /// <summary>Loads a world written by <see cref="ShapesWorld.Generate"/>.</summary>
    /// <exception cref="FileNotFoundException">world.json or a file it names is missing.</exception>
    /// <exception cref="InvalidDataException">A file is malformed; the message names the file and line.</exception>
    public static ShapesWorldDataset Load(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        string root = Path.GetFullPath(folder);
        string path = Path.Combine(root, ShapesWorld.ManifestFileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"No shapes world in '{root}': {ShapesWorld.ManifestFileName} is missing.", path);
        ShapesWorldManifest manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<ShapesWorldManifest>(File.ReadAllText(path), ShapesWorldOptions.Json)
                ?? throw new InvalidDataException($"'{path}' is empty.");
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"'{path}' is not a valid shapes world manifest: {ex.Message}", ex);
        }
        if (manifest.FormatVersion != ShapesWorld.FormatVersion)
            throw new InvalidDataException($"'{path}' has format version {manifest.FormatVersion}; this library reads version {ShapesWorld.FormatVersion}.");
        manifest.Folder = root;
        return new ShapesWorldDataset(manifest);
    }

    /// <summary>Captioned images of a split (empty when the split has none).</summary>
    public IReadOnlyList<ShapesImageExample> Images(ShapesSplit split) => _images.GetValueOrDefault(split) ?? [];

    /// <summary>Stories of a split.</summary>
    public IReadOnlyList<ShapesStory> Stories(ShapesSplit split) => _stories.GetValueOrDefault(split) ?? [];

    /// <summary>Dialogues of a split.</summary>
    public IReadOnlyList<ShapesDialogue> Dialogues(ShapesSplit split) => _dialogues.GetValueOrDefault(split) ?? [];

    /// <summary>Decision prompts of a split.</summary>
    public IReadOnlyList<ShapesDecisionPrompt> DecisionPrompts(ShapesSplit split) => _decision.GetValueOrDefault(split) ?? [];

    /// <summary>Path of a split's text corpus (one document per line).</summary>
    public string CorpusPath(ShapesSplit split) =>
        Manifest.Corpus.TryGetValue(split, out var f) ? Manifest.PathOf(f.Records)
            : throw new KeyNotFoundException($"The world has no corpus for split {split}.");

    private List<T> ReadLines<T>(ShapesWorldFiles files)
    {
        string path = Manifest.PathOf(files.Records);
        if (!File.Exists(path)) throw new FileNotFoundException($"The shapes world file '{path}' named in {ShapesWorld.ManifestFileName} is missing.", path);
        var result = new List<T>(files.Count);
        int lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (line.Length == 0) continue;
            try
            {
                result.Add(JsonSerializer.Deserialize<T>(line, ShapesWorldOptions.Json) ?? throw new InvalidDataException($"'{path}' line {lineNo} is null."));
            }
            catch (JsonException ex)
            {
                throw new InvalidDataException($"'{path}' line {lineNo} is not a valid {typeof(T).Name}: {ex.Message}", ex);
            }
        }
        if (result.Count != files.Count)
            throw new InvalidDataException($"'{path}' has {result.Count} records but {ShapesWorld.ManifestFileName} says {files.Count}.");
        return result;
    }
}
