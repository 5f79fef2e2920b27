using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Gill.ML.World;

/// <summary>How many items a part of the world has in each split.</summary>
/// <param name="Train">Training items.</param>
/// <param name="Validation">Validation items.</param>
/// <param name="Test">Test items.</param>
public sealed record ShapesSplitCounts(
    [property: JsonPropertyName("train")] int Train,
    [property: JsonPropertyName("validation")] int Validation,
    [property: JsonPropertyName("test")] int Test)
{
    /// <summary>The count of a split (Train, Validation or Test).</summary>
    public int this[ShapesSplit split] => split switch
    {
        ShapesSplit.Train => Train,
        ShapesSplit.Validation => Validation,
        ShapesSplit.Test => Test,
        _ => 0,
    };

    /// <summary>Parses "N" (train only; validation and test from <paramref name="fallback"/>) or "T,V,E".</summary>
    /// <exception cref="FormatException">Not one or three integers.</exception>
    public static ShapesSplitCounts Parse(string text, ShapesSplitCounts fallback)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var n = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], out n[i])) throw new FormatException($"'{text}' is not N or TRAIN,VALIDATION,TEST.");
        return parts.Length switch
        {
            1 => fallback with { Train = n[0] },
            3 => new ShapesSplitCounts(n[0], n[1], n[2]),
            _ => throw new FormatException($"'{text}' is not N or TRAIN,VALIDATION,TEST."),
        };
    }
}

/// <summary>The splits of the shapes world.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ShapesSplit>))]
public enum ShapesSplit
{
    /// <summary>Training data; never contains a held-out (colour, shape) pair.</summary>
    Train,
    /// <summary>Validation data, same distribution as training.</summary>
    Validation,
    /// <summary>Test data, same distribution as training.</summary>
    Test,
    /// <summary>Images in which at least one object is a held-out (colour, shape) pair (images only).</summary>
    HeldOut,
}

/// <summary>Options of <see cref="ShapesWorld.Generate"/>. Defaults give a world sized for CPU pretraining.</summary>
public sealed class ShapesWorldOptions
{
    internal static class Defaults
    {
        public const int Seed = 0;
        public const int ImageSize = 32;
        public const int HeldOutImages = 1000;
        public const double TwoObjectFraction = 0.3;
        public const double PartialCaptionFraction = 0.25;
        public const int MaxDialogueRounds = 10;
        public static ShapesSplitCounts Images => new(20000, 1000, 1000);
        public static ShapesSplitCounts Stories => new(2000, 200, 500);
        public static ShapesSplitCounts Dialogues => new(2000, 200, 500);
        public static ShapesSplitCounts DecisionPrompts => new(500, 100, 300);
        public static ShapeKind[] Shapes => [ShapeKind.Circle, ShapeKind.Square, ShapeKind.Triangle, ShapeKind.Star, ShapeKind.Diamond];
        public static ShapeColor[] Colors => [ShapeColor.Red, ShapeColor.Green, ShapeColor.Blue, ShapeColor.Yellow, ShapeColor.Purple, ShapeColor.Orange];
        public static ShapesPair[] HeldOutPairs =>
        [
            new(ShapeColor.Red, ShapeKind.Triangle), new(ShapeColor.Green, ShapeKind.Star),
            new(ShapeColor.Blue, ShapeKind.Circle), new(ShapeColor.Yellow, ShapeKind.Square),
        ];
        public static ShapesBackground[] Backgrounds => [ShapesBackground.Black];
    }

    /// <summary>Seed of every random choice; the same seed gives byte-identical files.</summary>
    [JsonPropertyName("seed")] public int Seed { get; set; } = Defaults.Seed;

    /// <summary>Image width and height in pixels (32 trains best on CPU; 16–1024).</summary>
    [JsonPropertyName("image_size")] public int ImageSize { get; set; } = Defaults.ImageSize;

    /// <summary>Captioned images per split (train, validation, test).</summary>
    [JsonPropertyName("images")] public ShapesSplitCounts Images { get; set; } = Defaults.Images;

    /// <summary>Images of the held-out split: each has at least one object of a held-out pair.</summary>
    [JsonPropertyName("held_out_images")] public int HeldOutImages { get; set; } = Defaults.HeldOutImages;

    /// <summary>Five-step stories per split.</summary>
    [JsonPropertyName("stories")] public ShapesSplitCounts Stories { get; set; } = Defaults.Stories;

    /// <summary>Question/answer dialogues per split.</summary>
    [JsonPropertyName("dialogues")] public ShapesSplitCounts Dialogues { get; set; } = Defaults.Dialogues;

    /// <summary>Retrieve-or-generate prompts per split.</summary>
    [JsonPropertyName("decision_prompts")] public ShapesSplitCounts DecisionPrompts { get; set; } = Defaults.DecisionPrompts;

    /// <summary>Fraction of captioned images with two objects (0–1).</summary>
    [JsonPropertyName("two_object_fraction")] public double TwoObjectFraction { get; set; } = Defaults.TwoObjectFraction;

    /// <summary>Fraction of captions that leave out the size and/or position ("a red circle"); 0 makes every caption state everything.</summary>
    [JsonPropertyName("partial_caption_fraction")] public double PartialCaptionFraction { get; set; } = Defaults.PartialCaptionFraction;

    /// <summary>Most question/answer rounds per dialogue (4–10).</summary>
    [JsonPropertyName("max_dialogue_rounds")] public int MaxDialogueRounds { get; set; } = Defaults.MaxDialogueRounds;

    /// <summary>Shapes used (at least 2, no repeats).</summary>
    [JsonPropertyName("shapes")] public IReadOnlyList<ShapeKind> Shapes { get; set; } = Defaults.Shapes;

    /// <summary>Colours used (at least 2, no repeats).</summary>
    [JsonPropertyName("colors")] public IReadOnlyList<ShapeColor> Colors { get; set; } = Defaults.Colors;

    /// <summary>(Colour, shape) pairs never drawn in train/validation/test, only in the held-out split and in "gen" decision prompts.</summary>
    [JsonPropertyName("held_out_pairs")] public IReadOnlyList<ShapesPair> HeldOutPairs { get; set; } = Defaults.HeldOutPairs;

    /// <summary>Backgrounds, chosen uniformly per image (black only by default; other backgrounds are named in captions).</summary>
    [JsonPropertyName("backgrounds")] public IReadOnlyList<ShapesBackground> Backgrounds { get; set; } = Defaults.Backgrounds;

    /// <summary>The image split decision prompts are labelled against: "ret" when it holds a matching image.</summary>
    [JsonPropertyName("decision_gallery")] public ShapesSplit DecisionGallery { get; set; } = ShapesSplit.Train;

    /// <summary>Checks every option.</summary>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    public void Validate()
    {
        if (ImageSize < ShapesRenderer.MinImageSize || ImageSize > ShapesRenderer.MaxImageSize)
            throw new ArgumentOutOfRangeException(nameof(ImageSize), ImageSize, $"{nameof(ImageSize)} must be in [{ShapesRenderer.MinImageSize}, {ShapesRenderer.MaxImageSize}] pixels.");
        CheckCounts(Images, nameof(Images));
        CheckCounts(Stories, nameof(Stories));
        CheckCounts(Dialogues, nameof(Dialogues));
        CheckCounts(DecisionPrompts, nameof(DecisionPrompts));
        if (Images.Train <= 0)
            throw new ArgumentOutOfRangeException(nameof(Images), Images.Train, $"{nameof(Images)}.{nameof(ShapesSplitCounts.Train)} must be at least 1: a world without training images cannot be used.");
        if (HeldOutImages < 0)
            throw new ArgumentOutOfRangeException(nameof(HeldOutImages), HeldOutImages, $"{nameof(HeldOutImages)} must not be negative.");
        if (!(TwoObjectFraction >= 0 && TwoObjectFraction <= 1))
            throw new ArgumentOutOfRangeException(nameof(TwoObjectFraction), TwoObjectFraction, $"{nameof(TwoObjectFraction)} must be in [0, 1].");
        if (!(PartialCaptionFraction >= 0 && PartialCaptionFraction <= 1))
            throw new ArgumentOutOfRangeException(nameof(PartialCaptionFraction), PartialCaptionFraction, $"{nameof(PartialCaptionFraction)} must be in [0, 1].");
        if (MaxDialogueRounds < 4 || MaxDialogueRounds > 10)
            throw new ArgumentOutOfRangeException(nameof(MaxDialogueRounds), MaxDialogueRounds, $"{nameof(MaxDialogueRounds)} must be in [4, 10] (four rounds are needed to state shape, colour, size and position).");
        CheckList(Shapes, nameof(Shapes), 2);
        CheckList(Colors, nameof(Colors), 2);
        CheckList(Backgrounds, nameof(Backgrounds), 1);
        if (HeldOutPairs is null) throw new ArgumentNullException(nameof(HeldOutPairs));
        foreach (var p in HeldOutPairs)
            if (!Shapes.Contains(p.Shape) || !Colors.Contains(p.Color))
                throw new ArgumentException($"{nameof(HeldOutPairs)} contains '{p}', whose colour or shape is not in {nameof(Colors)}/{nameof(Shapes)}.", nameof(HeldOutPairs));
        if (HeldOutPairs.Distinct().Count() != HeldOutPairs.Count)
            throw new ArgumentException($"{nameof(HeldOutPairs)} has repeated pairs.", nameof(HeldOutPairs));
        if (HeldOutPairs.Count >= Shapes.Count * Colors.Count - 1)
            throw new ArgumentException($"{nameof(HeldOutPairs)} holds out {HeldOutPairs.Count} of {Shapes.Count * Colors.Count} pairs; at least two must remain for training.", nameof(HeldOutPairs));
        if (HeldOutPairs.Count == 0 && HeldOutImages > 0)
            throw new ArgumentException($"{nameof(HeldOutImages)} is {HeldOutImages} but {nameof(HeldOutPairs)} is empty.", nameof(HeldOutPairs));
        if (HeldOutPairs.Count == 0 && (DecisionPrompts.Train + DecisionPrompts.Validation + DecisionPrompts.Test) > 0)
            throw new ArgumentException($"{nameof(DecisionPrompts)} need {nameof(HeldOutPairs)} (the compositions absent from the gallery); set the prompt counts to 0 or hold out pairs.", nameof(HeldOutPairs));
        if (DecisionGallery == ShapesSplit.HeldOut)
            throw new ArgumentException($"{nameof(DecisionGallery)} must be Train, Validation or Test.", nameof(DecisionGallery));
    }

    private static void CheckCounts(ShapesSplitCounts? c, string name)
    {
        if (c is null) throw new ArgumentNullException(name);
        if (c.Train < 0 || c.Validation < 0 || c.Test < 0)
            throw new ArgumentOutOfRangeException(name, c, $"{name} counts must not be negative.");
    }

    private static void CheckList<T>(IReadOnlyList<T>? items, string name, int min)
    {
        if (items is null) throw new ArgumentNullException(name);
        if (items.Count < min) throw new ArgumentException($"{name} needs at least {min} entries, got {items.Count}.", name);
        if (items.Distinct().Count() != items.Count) throw new ArgumentException($"{name} has repeated entries.", name);
        foreach (var i in items)
            if (!Enum.IsDefined(typeof(T), i!)) throw new ArgumentException($"{name} contains an unknown value {i}.", name);
    }

    internal static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Converters = { new ShapesPairJsonConverter() },
    };

    /// <summary>The options as JSON (the form stored in world.json).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>SHA-256 (hex) of <see cref="ToJson"/>: two worlds with the same hash were generated from the same options.</summary>
    public string Hash() => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(ToJson())));
}

/// <summary>Writes pairs as "red:triangle".</summary>
internal sealed class ShapesPairJsonConverter : JsonConverter<ShapesPair>
{
    public override ShapesPair Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        ShapesPair.Parse(reader.GetString() ?? throw new JsonException("A colour:shape pair is null."));

    public override void Write(Utf8JsonWriter writer, ShapesPair value, JsonSerializerOptions options) =>
        writer.WriteStringValue($"{ShapesWords.Color(value.Color)}:{ShapesWords.Shape(value.Shape)}");
}
