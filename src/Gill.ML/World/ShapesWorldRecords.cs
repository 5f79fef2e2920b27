using System.Text.Json.Serialization;

namespace Gill.ML.World;

/// <summary>One captioned image of an image split.</summary>
/// <param name="Id">Index within its split.</param>
/// <param name="Caption">The caption.</param>
/// <param name="Image">Image path relative to the world folder (the folder of the split TSV).</param>
/// <param name="Scene">The structured attributes the image was drawn from.</param>
/// <param name="Mentions">Which attributes the caption states.</param>
public sealed record ShapesImageExample(
    [property: JsonPropertyName("id")] int Id,
    [property: JsonPropertyName("caption")] string Caption,
    [property: JsonPropertyName("image")] string Image,
    [property: JsonPropertyName("scene")] ShapesScene Scene,
    [property: JsonPropertyName("mentions")] ShapesMentions Mentions)
{
    /// <summary>Absolute image path (set by <see cref="ShapesWorldDataset.Load"/>).</summary>
    [JsonIgnore] public string ImagePath { get; init; } = Image;
}

/// <summary>What the last step of a story changes.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ShapesStoryChange>))]
public enum ShapesStoryChange
{
    /// <summary>"it turns blue".</summary>
    Recolor,
    /// <summary>"it moves to the right".</summary>
    Move,
    /// <summary>"it gets bigger" (small → large).</summary>
    Grow,
    /// <summary>"it gets smaller" (large → small).</summary>
    Shrink,
    /// <summary>"it becomes a square".</summary>
    Reshape,
    /// <summary>"another one appears next to it": a second object of the same shape, colour and size.</summary>
    Duplicate,
}

/// <summary>One step of a story.</summary>
/// <param name="Caption">The step's caption.</param>
/// <param name="Image">Image path relative to the world folder.</param>
/// <param name="Scene">The scene after this step.</param>
public sealed record ShapesStoryStep(
    [property: JsonPropertyName("caption")] string Caption,
    [property: JsonPropertyName("image")] string Image,
    [property: JsonPropertyName("scene")] ShapesScene Scene)
{
    /// <summary>Absolute image path (set by <see cref="ShapesWorldDataset.Load"/>).</summary>
    [JsonIgnore] public string ImagePath { get; init; } = Image;
}

/// <summary>
/// A five-step story of an evolving scene (the VIST analogue). Steps 1–4 name the object explicitly; the last
/// caption is ambiguous on its own ("it turns blue") so the earlier steps are needed to know what to draw.
/// </summary>
/// <param name="Id">Index within its split.</param>
/// <param name="Steps">The five steps.</param>
/// <param name="FinalChange">What the last step changes.</param>
public sealed record ShapesStory(
    [property: JsonPropertyName("id")] int Id,
    [property: JsonPropertyName("steps")] IReadOnlyList<ShapesStoryStep> Steps,
    [property: JsonPropertyName("final_change")] ShapesStoryChange FinalChange);

/// <summary>One question/answer round of a dialogue.</summary>
/// <param name="Question">The question.</param>
/// <param name="Answer">The answer.</param>
/// <param name="Informative">Whether the answer tells something about the image's object or background.</param>
public sealed record ShapesDialogueRound(
    [property: JsonPropertyName("question")] string Question,
    [property: JsonPropertyName("answer")] string Answer,
    [property: JsonPropertyName("informative")] bool Informative);

/// <summary>
/// A dialogue about one single-object image (the VisDial analogue): a vague caption and up to ten rounds that
/// together state shape, colour, size, position (and a non-black background). The image is the generation target.
/// </summary>
/// <param name="Id">Index within its split.</param>
/// <param name="Caption">The vague opening caption.</param>
/// <param name="Rounds">The question/answer rounds.</param>
/// <param name="Image">Image path relative to the world folder.</param>
/// <param name="Scene">The image's attributes.</param>
public sealed record ShapesDialogue(
    [property: JsonPropertyName("id")] int Id,
    [property: JsonPropertyName("caption")] string Caption,
    [property: JsonPropertyName("rounds")] IReadOnlyList<ShapesDialogueRound> Rounds,
    [property: JsonPropertyName("image")] string Image,
    [property: JsonPropertyName("scene")] ShapesScene Scene)
{
    /// <summary>Absolute image path (set by <see cref="ShapesWorldDataset.Load"/>).</summary>
    [JsonIgnore] public string ImagePath { get; init; } = Image;

    /// <summary>The caption followed by "Q: …\nA: …" lines, joined with <paramref name="separator"/>.</summary>
    public string ToText(string separator = "\n") =>
        string.Join(separator, Rounds.SelectMany(r => new[] { $"Q: {r.Question}", $"A: {r.Answer}" }).Prepend(Caption));
}

/// <summary>The label of a decision prompt.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ShapesDecision>))]
public enum ShapesDecision
{
    /// <summary>"ret": the gallery holds an image matching the prompt.</summary>
    Retrieve,
    /// <summary>"gen": no gallery image matches (the prompt uses a held-out composition).</summary>
    Generate,
}

/// <summary>A retrieve-or-generate prompt (the PartiPrompts analogue), labelled by construction and checked against the gallery.</summary>
/// <param name="Id">Index within its split.</param>
/// <param name="Prompt">The prompt.</param>
/// <param name="Label">Retrieve ("ret") or Generate ("gen").</param>
/// <param name="Object">The object the prompt describes.</param>
/// <param name="Background">The background the prompt describes.</param>
/// <param name="Mentions">The attributes the prompt states (a gallery image matches when these attributes and the background agree).</param>
public sealed record ShapesDecisionPrompt(
    [property: JsonPropertyName("id")] int Id,
    [property: JsonPropertyName("prompt")] string Prompt,
    [property: JsonPropertyName("label")] ShapesDecision Label,
    [property: JsonPropertyName("object")] ShapesObject Object,
    [property: JsonPropertyName("background")] ShapesBackground Background,
    [property: JsonPropertyName("mentions")] ShapesMentions Mentions)
{
    /// <summary>"ret" or "gen", as in GILL's decision data.</summary>
    [JsonIgnore] public string LabelText => Label == ShapesDecision.Retrieve ? "ret" : "gen";

    /// <summary>Whether <paramref name="scene"/> (a gallery image) matches this prompt: a single object whose stated attributes and background agree.</summary>
    public bool Matches(ShapesScene scene)
    {
        ArgumentNullException.ThrowIfNull(scene);
        if (scene.Objects.Count != 1 || scene.Background != Background) return false;
        var o = scene.Objects[0];
        return o.Color == Object.Color && o.Shape == Object.Shape
            && (!Mentions.HasFlag(ShapesMentions.Size) || o.Size == Object.Size)
            && (!Mentions.HasFlag(ShapesMentions.Position) || o.Position == Object.Position);
    }
}

/// <summary>Progress of <see cref="ShapesWorld.Generate"/>.</summary>
/// <param name="Stage">What is being written ("images/train", "stories/test", …).</param>
/// <param name="Completed">Items of this stage done.</param>
/// <param name="Total">Items of this stage.</param>
public readonly record struct ShapesWorldProgress(string Stage, int Completed, int Total);

/// <summary>The files of one part of a split (paths relative to the world folder).</summary>
/// <param name="Count">Number of items.</param>
/// <param name="Tsv">The TSV file (null when the part has none).</param>
/// <param name="Records">The JSON-lines file with every attribute (for a corpus: the text file).</param>
public sealed record ShapesWorldFiles(
    [property: JsonPropertyName("count")] int Count,
    [property: JsonPropertyName("tsv")] string? Tsv,
    [property: JsonPropertyName("records")] string Records);

/// <summary>What <see cref="ShapesWorld.Generate"/> wrote; saved as world.json in the world folder.</summary>
public sealed class ShapesWorldManifest
{
    /// <summary>Version of the folder layout.</summary>
    [JsonPropertyName("format_version")] public int FormatVersion { get; init; } = ShapesWorld.FormatVersion;

    /// <summary>The seed the world was generated from.</summary>
    [JsonPropertyName("seed")] public int Seed { get; init; }

    /// <summary>Image width and height in pixels.</summary>
    [JsonPropertyName("image_size")] public int ImageSize { get; init; }

    /// <summary>SHA-256 of the options' JSON.</summary>
    [JsonPropertyName("options_hash")] public string OptionsHash { get; init; } = "";

    /// <summary>The options the world was generated from.</summary>
    [JsonPropertyName("options")] public ShapesWorldOptions Options { get; init; } = new();

    /// <summary>Captioned image splits (train, validation, test, held-out).</summary>
    [JsonPropertyName("images")] public Dictionary<ShapesSplit, ShapesWorldFiles> Images { get; init; } = [];

    /// <summary>Stories per split.</summary>
    [JsonPropertyName("stories")] public Dictionary<ShapesSplit, ShapesWorldFiles> Stories { get; init; } = [];

    /// <summary>Dialogues per split.</summary>
    [JsonPropertyName("dialogues")] public Dictionary<ShapesSplit, ShapesWorldFiles> Dialogues { get; init; } = [];

    /// <summary>Decision prompts per split.</summary>
    [JsonPropertyName("decision_prompts")] public Dictionary<ShapesSplit, ShapesWorldFiles> DecisionPrompts { get; init; } = [];

    /// <summary>Text corpus per split (one document per line) for language-model pretraining.</summary>
    [JsonPropertyName("corpus")] public Dictionary<ShapesSplit, ShapesWorldFiles> Corpus { get; init; } = [];

    /// <summary>Number of PNG files written.</summary>
    [JsonPropertyName("png_files")] public int PngFiles { get; init; }

    /// <summary>The world folder (set when generated or loaded; not stored).</summary>
    [JsonIgnore] public string Folder { get; internal set; } = "";

    /// <summary>Absolute path of a path stored in the manifest.</summary>
    public string PathOf(string relativePath) => Path.GetFullPath(Path.Combine(Folder, relativePath));
}
